//! Our own fork/exec: `clone3(CLONE_PIDFD | CLONE_INTO_CGROUP)` puts the child straight
//! into its service's cgroup (no migration after fork, which costs an RCU grace period per
//! spawn) and hands us a pidfd, which becomes readable when the child exits. Everything the
//! child needs is prepared before the clone; between clone and exec the child makes only
//! async-signal-safe system calls and allocates nothing.

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::io::unix::AsyncFd;

use crate::control::proto::ExitInfo;

const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;
const P_PIDFD: libc::idtype_t = 3;

/// `struct clone_args` of linux/sched.h (version 2, with `cgroup`).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// Set once clone3 proved unusable here (old kernel, seccomp): use the portable path.
static UNSUPPORTED: AtomicBool = AtomicBool::new(false);

/// Set once `close_range(CLOSE_RANGE_UNSHARE)` failed in a child (a kernel before 5.9, a
/// seccomp filter): children get a copy of our descriptor table again.
static NO_SHARED_FILES: AtomicBool = AtomicBool::new(false);

const CLOSE_RANGE_UNSHARE: libc::c_uint = 1 << 1;

/// Marks every descriptor above stdio close-on-exec. What the daemon inherited from the
/// shell or script that started it (an open `/dev/null`, a terminal's pipe) would otherwise
/// reach every service: a child must get exactly its stdio. The daemon keeps using them.
pub fn cloexec_inherited() {
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    // SAFETY: close_range only sets a flag here; it closes nothing.
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            libc::c_uint::MAX,
            CLOSE_RANGE_CLOEXEC,
        )
    };
    if r == 0 {
        return;
    }
    // Before Linux 5.11: one by one.
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<RawFd> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd > 2)
        .collect();
    for fd in fds {
        // SAFETY: setting FD_CLOEXEC on a number that is open or (the listing's own
        // descriptor, now closed) fails harmlessly with EBADF.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
}

/// Low descriptor numbers through which a child gets its stdio. The child shares our
/// descriptor table (`CLONE_FILES`) and its first act is `close_range(first, ~0,
/// CLOSE_RANGE_UNSHARE)`: a private table holding only the descriptors below `first`.
/// Copying our whole table, then closing every copy at exec, cost each spawn time in
/// proportion to our open descriptors: three per service, so a thousand-service start was
/// quadratic (a tenth of its CPU in the children's `close_on_exec`). Our pipe ends are put
/// in the slots just before the clone and the slots reset to /dev/null right after it.
/// Two sets, each behind its mutex, so two threads can spawn at once (the actor runs a
/// batch of spawns on two); a child keeps the other set's descriptors only until its exec
/// (they are close-on-exec). A third thread waits for the second set.
#[derive(Clone, Copy)]
struct Slots {
    null: RawFd,
    out: RawFd,
    err: RawFd,
    report: RawFd,
    first: libc::c_uint,
}

static SLOTS: [std::sync::Mutex<Option<Slots>>; 2] =
    [std::sync::Mutex::new(None), std::sync::Mutex::new(None)];

impl Slots {
    /// /dev/null at the four lowest free numbers (all close-on-exec), kept for good.
    fn reserve() -> io::Result<Slots> {
        let null = std::os::fd::IntoRawFd::into_raw_fd(open_devnull()?);
        let dup = || {
            // SAFETY: duplicating a descriptor we own to the lowest free number >= 3.
            let fd = unsafe { libc::fcntl(null, libc::F_DUPFD_CLOEXEC, 3) };
            if fd < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(fd)
            }
        };
        let (out, err, report) = (dup()?, dup()?, dup()?);
        let first = [null, out, err, report].into_iter().max().unwrap_or(3) + 1;
        Ok(Slots {
            null,
            out,
            err,
            report,
            first: first as libc::c_uint,
        })
    }

    /// `fd` at `slot`, close-on-exec (another thread's exec must not inherit it).
    fn put(slot: RawFd, fd: RawFd) -> io::Result<()> {
        // SAFETY: dup3 onto a slot we reserved; it replaces what the slot held.
        if unsafe { libc::dup3(fd, slot, libc::O_CLOEXEC) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Back to /dev/null: the slots must not keep a child's pipes open (its logs would
    /// never see EOF).
    fn clear(&self) {
        for slot in [self.out, self.err, self.report] {
            let _ = Self::put(slot, self.null);
        }
    }

    /// The slots holding `out`, `err` and `report` for one spawn, or None where a child
    /// cannot share our table: without a vfork (not x86_64) the parent would reset the
    /// slots before the child read them; or `close_range` was refused before.
    fn fill(out: RawFd, err: RawFd, report: RawFd) -> Option<Filled> {
        if !cfg!(target_arch = "x86_64") || NO_SHARED_FILES.load(Ordering::Relaxed) {
            return None;
        }
        // Both sets at the first spawn, while our low numbers are free: a set reserved
        // later would sit above every service's descriptors, and its children would copy
        // that whole table again.
        static RESERVE: std::sync::Once = std::sync::Once::new();
        RESERVE.call_once(|| {
            for set in &SLOTS {
                let mut lock = set.lock().unwrap_or_else(|p| p.into_inner());
                if lock.is_none() {
                    *lock = Slots::reserve().ok();
                }
            }
        });
        let mut lock = match SLOTS[0].try_lock() {
            Ok(lock) => lock,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => {
                SLOTS[1].lock().unwrap_or_else(|p| p.into_inner())
            }
        };
        if lock.is_none() {
            *lock = Slots::reserve().ok();
        }
        let slots = (*lock)?;
        // Built first, so a failed put below is cleared on the way out too.
        let filled = Filled { slots, _lock: lock };
        Self::put(slots.out, out).ok()?;
        Self::put(slots.err, err).ok()?;
        Self::put(slots.report, report).ok()?;
        Some(filled)
    }
}

/// The slots filled for one spawn, theirs alone while this lives; cleared when dropped.
struct Filled {
    slots: Slots,
    _lock: std::sync::MutexGuard<'static, Option<Slots>>,
}

impl Drop for Filled {
    fn drop(&mut self) {
        self.slots.clear();
    }
}

fn open_devnull() -> io::Result<OwnedFd> {
    // SAFETY: open with a static NUL-terminated path.
    let fd = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub fn supported() -> bool {
    !UNSUPPORTED.load(Ordering::Relaxed)
}

/// A child we forked: its pid, a pidfd for its exit, and the read ends of its output.
pub struct ForkedChild {
    pub pid: i32,
    pub pidfd: OwnedFd,
    /// Read ends of the child's stdout and stderr, already non-blocking.
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
    /// The child is in the requested cgroup (false: it was asked for and refused).
    pub in_cgroup: bool,
    pub cgroup_error: Option<String>,
}

/// What the child must do, prepared in the parent (no allocation after the clone).
pub struct Plan {
    /// Paths to try with execve, in order (the PATH search is done here).
    candidates: Vec<CString>,
    argv: Vec<CString>,
    envp: Vec<CString>,
    cwd: CString,
}

fn cstr(b: &[u8]) -> io::Result<CString> {
    CString::new(b).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "a NUL byte in an argument or variable",
        )
    })
}

impl Plan {
    /// `command` as in the config: with a `/` it is a path (relative to `cwd`), else it is
    /// looked up in the child's own `PATH`.
    pub fn new<'a>(
        command: &str,
        args: &[String],
        env: impl Iterator<Item = (&'a str, &'a str)>,
        cwd: &Path,
    ) -> io::Result<Plan> {
        let mut envp = Vec::new();
        let mut path_var = None;
        for (k, v) in env {
            if k == "PATH" {
                path_var = Some(v.to_string());
            }
            envp.push(cstr(format!("{k}={v}").as_bytes())?);
        }
        let candidates = if command.contains('/') {
            vec![cstr(command.as_bytes())?]
        } else {
            let path = path_var.unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
            path.split(':')
                .filter(|d| !d.is_empty())
                .map(|d| cstr(Path::new(d).join(command).as_os_str().as_bytes()))
                .collect::<io::Result<Vec<_>>>()?
        };
        let mut argv = vec![cstr(command.as_bytes())?];
        for a in args {
            argv.push(cstr(a.as_bytes())?);
        }
        Ok(Plan {
            candidates,
            argv,
            envp,
            cwd: cstr(OsStr::as_bytes(cwd.as_os_str()))?,
        })
    }
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: pipe2 writes two fresh descriptors into the array on success.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both are fresh descriptors we own.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Forks and execs per `plan`, in a new session, into `cgroup` (an open directory fd of
/// the service's cgroup) when given. Errors of exec come back through a CLOEXEC pipe, so
/// "cannot execute" is reported here, not as an exit.
pub fn spawn(plan: &Plan, cgroup: Option<&OwnedFd>) -> io::Result<ForkedChild> {
    match clone_exec(plan, cgroup) {
        // Refused by the cgroup, or clone3 (or its cgroup flag) missing: a seccomp filter
        // (Docker's default answers ENOSYS) or an older kernel. Without the cgroup, a
        // missing clone3 marks the fast path unsupported and the caller takes the portable
        // one, whose child joins its cgroup itself.
        Err(e) if cgroup.is_some() && (cgroup_refused(&e) || clone3_missing(&e)) => {
            // The cgroup refused the child (removed, or a threaded/busy cgroup): run it
            // outside and say so; the caller tracks this run by group and markers.
            let mut child = clone_exec(plan, None)?;
            child.in_cgroup = false;
            child.cgroup_error = Some(format!("clone3 into the cgroup failed: {e}"));
            Ok(child)
        }
        other => other,
    }
}

fn clone3_missing(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOSYS | libc::E2BIG | libc::EINVAL)
    )
}

fn cgroup_refused(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(
            libc::EBUSY
                | libc::EOPNOTSUPP
                | libc::ENOENT
                | libc::EACCES
                | libc::EPERM
                | libc::EBADF
        )
    )
}

fn clone_exec(plan: &Plan, cgroup: Option<&OwnedFd>) -> io::Result<ForkedChild> {
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    // Our ends are read by the runtime: non-blocking now, in one call each, so they can be
    // registered unchecked (tokio's checks cost three more syscalls per pipe).
    for fd in [&out_r, &err_r] {
        // SAFETY: F_SETFL on a descriptor we own; O_RDONLY is what pipe2 gave it.
        if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    let (rep_r, rep_w) = pipe()?;
    // Shared table: the child's stdio comes through the slots (stdin from their /dev/null).
    let filled = Slots::fill(out_w.as_raw_fd(), err_w.as_raw_fd(), rep_w.as_raw_fd());
    let (devnull, fds) = match &filled {
        Some(f) => (
            None,
            [f.slots.null, f.slots.out, f.slots.err, f.slots.report],
        ),
        None => {
            let null = open_devnull()?;
            let fds = [
                null.as_raw_fd(),
                out_w.as_raw_fd(),
                err_w.as_raw_fd(),
                rep_w.as_raw_fd(),
            ];
            (Some(null), fds)
        }
    };

    let mut argv: Vec<*const libc::c_char> = plan.argv.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = plan.envp.iter().map(|a| a.as_ptr()).collect();
    envp.push(std::ptr::null());
    let candidates: Vec<*const libc::c_char> = plan.candidates.iter().map(|c| c.as_ptr()).collect();

    let mut pidfd: RawFd = -1;
    let mut args = CloneArgs {
        flags: libc::CLONE_PIDFD as u64,
        pidfd: &mut pidfd as *mut RawFd as u64,
        exit_signal: libc::SIGCHLD as u64,
        ..CloneArgs::default()
    };
    if let Some(cg) = cgroup {
        args.flags |= CLONE_INTO_CGROUP;
        args.cgroup = cg.as_raw_fd() as u64;
    }
    if filled.is_some() {
        args.flags |= libc::CLONE_FILES as u64;
    }
    let ctx = ChildCtx {
        fds,
        unshare_from: filled.as_ref().map(|f| f.slots.first),
        // Tests: close_range refused, as on a kernel before 5.9.
        unshare_refused: filled.is_some() && super::failpoint("close-range-unshare"),
        cwd: &plan.cwd,
        candidates: &candidates,
        argv: &argv,
        envp: &envp,
    };
    let ret = if super::failpoint("clone3-enosys") {
        // Tests: clone3 answered as a seccomp filter would.
        // SAFETY: errno is this thread's.
        unsafe { *libc::__errno_location() = libc::ENOSYS };
        -1
    } else {
        // SAFETY: the child only makes async-signal-safe system calls on data prepared
        // above, then execs or _exits (see `clone_child`).
        unsafe { clone_child(&mut args, &ctx) }
    };
    // The child has its own table (or is gone): the slots go back to /dev/null.
    drop(filled);
    if ret < 0 {
        let e = io::Error::last_os_error();
        if cgroup.is_none() && clone3_missing(&e) {
            UNSUPPORTED.store(true, Ordering::Relaxed);
        }
        return Err(e);
    }
    let pid = ret as i32;
    // SAFETY: CLONE_PIDFD stored a fresh descriptor we own.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    drop((out_w, err_w, rep_w, devnull));
    // The report pipe closes on exec (CLOEXEC): no bytes means exec succeeded. Waiting for
    // that EOF (not just for the vfork to return) also waits for the child to close what
    // it inherited; measured, that beats letting a thousand children do it while we spawn.
    let mut buf = [0u8; 4];
    let n = loop {
        // SAFETY: reading into a local buffer from a descriptor we own.
        let n = unsafe { libc::read(rep_r.as_raw_fd(), buf.as_mut_ptr().cast(), 4) };
        if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
            continue;
        }
        break n;
    };
    if n == 4 {
        let errno = i32::from_ne_bytes(buf);
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: reap the child that failed to exec, through its pidfd.
        unsafe {
            libc::waitid(
                P_PIDFD,
                pidfd.as_raw_fd() as libc::id_t,
                &mut info,
                libc::WEXITED,
            )
        };
        if errno == UNSHARE_FAILED {
            // The child could not get a table of its own and did nothing else: spawn
            // again, with a copy of ours, from now on.
            NO_SHARED_FILES.store(true, Ordering::Relaxed);
            drop((out_r, err_r, rep_r, pidfd));
            return clone_exec(plan, cgroup);
        }
        return Err(io::Error::from_raw_os_error(errno));
    }
    Ok(ForkedChild {
        pid,
        pidfd,
        stdout: out_r,
        stderr: err_r,
        in_cgroup: cgroup.is_some(),
        cgroup_error: None,
    })
}

/// What the child reports when `close_range(CLOSE_RANGE_UNSHARE)` failed: not an errno
/// (they are positive).
const UNSHARE_FAILED: i32 = -1;

/// What the child needs, all prepared (and owned) by the parent.
struct ChildCtx<'a> {
    /// /dev/null, stdout and stderr write ends, the report pipe's write end.
    fds: [RawFd; 4],
    /// Sharing our table (`CLONE_FILES`): unshare it, keeping the descriptors below this.
    unshare_from: Option<libc::c_uint>,
    unshare_refused: bool,
    cwd: &'a CString,
    candidates: &'a [*const libc::c_char],
    argv: &'a [*const libc::c_char],
    envp: &'a [*const libc::c_char],
}

/// Size of the child's own stack between clone and exec (it needs a few hundred bytes).
#[cfg(target_arch = "x86_64")]
const CHILD_STACK: usize = 64 * 1024;

/// clone3 like `posix_spawn` does it: `CLONE_VM | CLONE_VFORK`, the child on a stack of
/// its own, the calling thread suspended until the child has exec'd or exited. Sharing the
/// address space means no page tables are copied and none torn down again at exec: with a
/// thousand services that copy was most of each spawn. Returns like clone3 in the parent.
///
/// # Safety
/// `args` must be a valid clone_args; `ctx` must stay alive until this returns.
#[cfg(target_arch = "x86_64")]
unsafe fn clone_child(args: &mut CloneArgs, ctx: &ChildCtx<'_>) -> libc::c_long {
    // One stack per spawning thread, kept: a fresh zeroed 64 KiB per spawn cost 16 page
    // faults each time (a tenth of a 1000-service cold start). Not zeroed: the child only
    // pushes onto it. A thread spawns one child at a time (the vfork suspends it), so
    // reuse is safe.
    // Freed when its thread ends (a batch's helper thread).
    struct Stack(std::cell::Cell<usize>);
    const LAYOUT: std::alloc::Layout = match std::alloc::Layout::from_size_align(CHILD_STACK, 16) {
        Ok(l) => l,
        Err(_) => panic!("CHILD_STACK is a valid size"),
    };
    impl Drop for Stack {
        fn drop(&mut self) {
            let p = self.0.get();
            if p != 0 {
                // SAFETY: allocated below with LAYOUT; no child runs on it now (a thread's
                // vfork child has exec'd or exited before the thread goes on).
                unsafe { std::alloc::dealloc(p as *mut u8, LAYOUT) };
            }
        }
    }
    thread_local! {
        static STACK: Stack = const { Stack(std::cell::Cell::new(0)) };
    }
    let base = STACK.with(|s| {
        if s.0.get() == 0 {
            // SAFETY: a non-zero size; freed when the thread ends.
            s.0.set(std::alloc::alloc(LAYOUT) as usize);
        }
        s.0.get()
    });
    if base == 0 {
        *libc::__errno_location() = libc::ENOMEM;
        return -1;
    }
    // 16-byte aligned top: the child starts with rsp there and `call`s its entry.
    let top = (base + CHILD_STACK) & !15;
    args.flags |= (libc::CLONE_VM | libc::CLONE_VFORK) as u64;
    args.stack = base as u64;
    args.stack_size = (top - base) as u64;
    // Every signal blocked across the clone: a handler of ours must not run in the child,
    // which shares our memory until its exec. The child resets dispositions, then unblocks.
    let mut all: libc::sigset_t = std::mem::zeroed();
    let mut old: libc::sigset_t = std::mem::zeroed();
    libc::sigfillset(&mut all);
    libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
    let ret: libc::c_long;
    // The child returns from the syscall on its new stack, with no frame of ours under it:
    // it calls `child_entry` straight away, which never returns. The parent branch jumps
    // over that. rcx and r11 are clobbered by `syscall`.
    std::arch::asm!(
        "syscall",
        "test rax, rax",
        "jnz 2f",
        "xor ebp, ebp",
        "mov rdi, r12",
        "call r13",
        "ud2",
        "2:",
        inlateout("rax") libc::SYS_clone3 => ret,
        in("rdi") args as *mut CloneArgs,
        in("rsi") std::mem::size_of::<CloneArgs>(),
        in("r12") ctx as *const ChildCtx<'_>,
        in("r13") child_entry as *const () as usize,
        lateout("rcx") _,
        lateout("r11") _,
        options(nostack),
    );
    libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
    // The raw syscall returns -errno; callers read errno like after libc's syscall().
    if ret < 0 {
        *libc::__errno_location() = -ret as i32;
        return -1;
    }
    ret
}

/// Elsewhere, clone3 like fork (the child gets a copy of the address space).
///
/// # Safety
/// As for the x86_64 version.
#[cfg(not(target_arch = "x86_64"))]
unsafe fn clone_child(args: &mut CloneArgs, ctx: &ChildCtx<'_>) -> libc::c_long {
    let ret = libc::syscall(
        libc::SYS_clone3,
        args as *mut CloneArgs,
        std::mem::size_of::<CloneArgs>(),
    );
    if ret == 0 {
        child_exec(ctx)
    }
    ret
}

#[cfg(target_arch = "x86_64")]
extern "C" fn child_entry(ctx: *const ChildCtx<'_>) -> ! {
    // SAFETY: the parent passed a live ChildCtx and is suspended until we exec or exit.
    unsafe { child_exec(&*ctx) }
}

/// The child between clone and exec. Never returns.
unsafe fn child_exec(ctx: &ChildCtx<'_>) -> ! {
    let (fds, cwd, candidates, argv, envp) = (ctx.fds, ctx.cwd, ctx.candidates, ctx.argv, ctx.envp);
    let report = |errno: i32| -> ! {
        let b = errno.to_ne_bytes();
        libc::write(fds[3], b.as_ptr().cast(), 4);
        libc::_exit(127);
    };
    // First of all, while the table is still the parent's: nothing below may change it.
    if let Some(first) = ctx.unshare_from {
        if ctx.unshare_refused
            || libc::syscall(
                libc::SYS_close_range,
                first,
                libc::c_uint::MAX,
                CLOSE_RANGE_UNSHARE,
            ) < 0
        {
            report(UNSHARE_FAILED);
        }
    }
    // Rust ignores SIGPIPE and the runtime may have installed handlers: an ignored signal
    // stays ignored across exec, so every disposition goes back to its default, before
    // anything is unblocked (a handler of ours must not run here).
    for sig in 1..65 {
        if sig != libc::SIGKILL && sig != libc::SIGSTOP {
            libc::signal(sig, libc::SIG_DFL);
        }
    }
    let mut empty: libc::sigset_t = std::mem::zeroed();
    libc::sigemptyset(&mut empty);
    libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
    if libc::setsid() < 0 {
        report(*libc::__errno_location());
    }
    super::limits::restore_in_child();
    for (target, fd) in [(0, fds[0]), (1, fds[1]), (2, fds[2])] {
        if libc::dup2(fd, target) < 0 {
            report(*libc::__errno_location());
        }
    }
    if libc::chdir(cwd.as_ptr()) < 0 {
        report(*libc::__errno_location());
    }
    let mut last = libc::ENOENT;
    for c in candidates {
        libc::execve(*c, argv.as_ptr(), envp.as_ptr());
        let e = *libc::__errno_location();
        // Like execvp: a missing file tries the next PATH entry; anything else is kept.
        if e != libc::ENOENT && e != libc::ENOTDIR {
            last = e;
        }
    }
    report(last)
}

/// Waits (asynchronously) for the child to exit and reaps it.
pub async fn wait(pidfd: OwnedFd) -> ExitInfo {
    let unknown = ExitInfo {
        code: None,
        signal: None,
    };
    // SAFETY: an OwnedFd stays open and refers to the same pidfd while the AsyncFd
    // owns it.
    let Ok(fd) = (unsafe { AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE) })
    else {
        return unknown;
    };
    loop {
        let Ok(mut guard) = fd.readable().await else {
            return unknown;
        };
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waitid on our pidfd into a local siginfo.
        let r = unsafe {
            libc::waitid(
                P_PIDFD,
                fd.get_ref().as_raw_fd() as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOHANG,
            )
        };
        if r < 0 {
            return unknown;
        }
        // SAFETY: si_pid/si_status are valid for SIGCHLD-class siginfo from waitid.
        let (pid, status) = unsafe { (info.si_pid(), info.si_status()) };
        if pid == 0 {
            // Readable but not yet waitable: wait for the next readiness.
            guard.clear_ready();
            continue;
        }
        return match info.si_code {
            libc::CLD_EXITED => ExitInfo {
                code: Some(status),
                signal: None,
            },
            _ => ExitInfo {
                code: None,
                signal: Some(status),
            },
        };
    }
}
