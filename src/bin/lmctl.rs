use clap::Parser;

fn main() {
    // `lmctl status | head` ends quietly like any Unix tool when the reader goes away,
    // instead of panicking on a failed print.
    // SAFETY: restoring a default disposition before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = lmsup::cli::Cli::parse();
    let code = match lmsup::cli::run(cli) {
        Ok(o) => o.code(),
        Err(e) => {
            eprintln!("lmctl: {e:#}");
            1
        }
    };
    std::process::exit(code);
}
