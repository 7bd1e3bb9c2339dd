//! `lmctl completions SHELL` (clap_complete) and `lmctl man` (clap_mangen).

use std::path::Path;

use clap::CommandFactory;

use super::{Cli, Outcome};

/// The shells `lmctl completions` writes for.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

pub(crate) fn completions(shell: Shell) -> anyhow::Result<Outcome> {
    let shell = match shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    clap_complete::generate(shell, &mut Cli::command(), "lmctl", &mut std::io::stdout());
    Ok(Outcome::Ok)
}

/// Without a folder, `lmctl.1` on stdout (`lmctl man | man -l -`); with one, `lmctl.1`
/// and `lmctl-VERB.1` for every verb.
pub(crate) fn man(dir: Option<&Path>) -> anyhow::Result<Outcome> {
    let cmd = Cli::command();
    let Some(dir) = dir else {
        clap_mangen::Man::new(cmd).render(&mut std::io::stdout())?;
        return Ok(Outcome::Ok);
    };
    std::fs::create_dir_all(dir)
        .map_err(|e| anyhow::anyhow!("cannot create {} ({e})", dir.display()))?;
    let mut written = Vec::new();
    let mut pages = vec![("lmctl".to_string(), cmd.clone())];
    for sub in cmd.get_subcommands() {
        pages.push((format!("lmctl-{}", sub.get_name()), sub.clone()));
    }
    for (name, page) in pages {
        let path = dir.join(format!("{name}.1"));
        let mut buf = Vec::new();
        clap_mangen::Man::new(page.name(name.clone())).render(&mut buf)?;
        std::fs::write(&path, buf)
            .map_err(|e| anyhow::anyhow!("cannot write {} ({e})", path.display()))?;
        written.push(path);
    }
    println!("wrote {} man pages into {}", written.len(), dir.display());
    Ok(Outcome::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every verb and every flag or argument says what it is for (`--help`, completions
    /// and man pages all show it).
    #[test]
    fn every_verb_and_argument_has_help() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if id == "help" || id == "version" {
                    continue;
                }
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                if sub.get_about().is_none() {
                    missing.push(format!("{path} {}", sub.get_name()));
                }
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "lmctl", &mut missing);
        assert!(missing.is_empty(), "no help for: {missing:?}");
        Cli::command().debug_assert();
    }
}
