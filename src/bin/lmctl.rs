use clap::Parser;

fn main() {
    let cli = lmsup::cli::Cli::parse();
    let code = match lmsup::cli::run(cli) {
        Ok(lmsup::cli::Outcome::Ok) => 0,
        Ok(lmsup::cli::Outcome::Failed) => 1,
        Ok(lmsup::cli::Outcome::Usage) => 2,
        Err(e) => {
            eprintln!("lmctl: {e:#}");
            1
        }
    };
    std::process::exit(code);
}
