//! Process-tree scans: `Snapshot::take()` (a full /proc scan) and `Sampler::sample()` (scan,
//! tree membership, PSS of each member) for one small tree, first on the machine as it is,
//! then with ~1000 extra `sleep` processes alive (started here, killed at the end).

use std::hint::black_box;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use lmsup::resources::{Sampler, Target};
use lmsup::spawn::tree::Snapshot;

const EXTRA: usize = 1000;

/// Children this bench started: killed and reaped on drop, also on a panic.
struct Owned(Vec<Child>);

impl Drop for Owned {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
        }
        for c in &mut self.0 {
            let _ = c.wait();
        }
    }
}

fn quiet(cmd: &mut Command) -> &mut Command {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
}

/// A shell in its own process group with three `sleep` children: a small service tree.
fn spawn_tree() -> Child {
    quiet(Command::new("sh").args(["-c", "sleep 600 & sleep 600 & sleep 600 & wait"]))
        .process_group(0)
        .spawn()
        .expect("spawn sh")
}

fn bench_pass(c: &mut Criterion, label: &str, tree_pid: i32) {
    let mut g = c.benchmark_group(format!("proc_scan_{label}"));
    g.sample_size(20).measurement_time(Duration::from_secs(4));
    g.bench_function("snapshot_take", |b| {
        b.iter(|| black_box(Snapshot::take().procs.len()))
    });
    let targets = vec![Target {
        run: None,
        service: "bench".to_string(),
        main_pid: Some(tree_pid),
        sessions: vec![tree_pid],
        cgroup: None,
        max_memory: None,
        cpu: true,
        looked: true,
    }];
    let mut sampler = Sampler::new("lmsup-bench-no-such-instance".to_string());
    let first = sampler.sample(&targets);
    assert_eq!(first[0].procs.len(), 4, "sh and its three sleeps");
    g.bench_function("sampler_sample_1_service", |b| {
        b.iter(|| black_box(sampler.sample(&targets)[0].memory_bytes))
    });
    g.finish();
}

fn bench_tree_scan(c: &mut Criterion) {
    let mut owned = Owned(vec![spawn_tree()]);
    let tree_pid = owned.0[0].id() as i32;
    std::thread::sleep(Duration::from_millis(200)); // let sh fork its sleeps
    bench_pass(c, "baseline", tree_pid);

    for _ in 0..EXTRA {
        match quiet(Command::new("sleep").arg("600")).spawn() {
            Ok(child) => owned.0.push(child),
            Err(e) => {
                eprintln!("stopped at {} extra processes: {e}", owned.0.len() - 1);
                break;
            }
        }
    }
    let label = format!("{}_extra_procs", owned.0.len() - 1);
    bench_pass(c, &label, tree_pid);

    // The tree's shell: kill its whole process group (its sleeps too), then reap it.
    // SAFETY: kill(2) with a negative pid signals that process group; no memory involved.
    unsafe { libc::kill(-tree_pid, libc::SIGKILL) };
    drop(owned);
}

criterion_group!(benches, bench_tree_scan);
criterion_main!(benches);
