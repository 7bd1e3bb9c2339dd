//! `lmctl monit`: the live view (placeholder until the TUI lands).

use super::{Ctx, Outcome};

pub(crate) fn monit(_ctx: &Ctx) -> anyhow::Result<Outcome> {
    use std::io::IsTerminal;
    if !std::io::stdout().is_terminal() {
        eprintln!("lmctl: monit needs a terminal, and stdout is not one; for a plain table reprinted every interval use `lmctl status --watch [INTERVAL]`");
        return Ok(Outcome::Usage);
    }
    Ok(Outcome::Ok)
}
