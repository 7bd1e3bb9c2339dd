use clap::Parser;

fn main() {
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
