//! The committed unit is what `lmctl startup` renders for /opt/leadmaster, and systemd
//! accepts it.

use std::path::Path;
use std::process::Command;

#[test]
fn committed_unit_matches_the_template() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/units/leadmaster-supervisord.service"
    );
    let config =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/supervisor.toml")).unwrap();
    let rendered = lmsup::cli::startup::unit(
        Path::new("/opt/leadmaster/bin"),
        Path::new("/opt/leadmaster/supervisor.toml"),
        Path::new("/opt/leadmaster"),
        &lmsup::cli::startup::Plan::from_toml(&config),
    );
    if std::env::var("UPDATE_UNITS").as_deref() == Ok("1") {
        std::fs::write(path, &rendered).unwrap();
    }
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    assert_eq!(
        committed, rendered,
        "units/ is stale: regenerate it with UPDATE_UNITS=1 cargo test --test it systemd_unit"
    );
}

#[test]
fn systemd_analyze_verifies_the_unit() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "systemd-analyze is missing in CI (apt-get install systemd)"
        );
        eprintln!(
            "SKIP: systemd-analyze is not installed; `apt-get install systemd` to run this test"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let bin = Path::new(crate::harness::LMCTL).parent().unwrap();
    let config = dir.path().join("supervisor.toml");
    let text = "[services.a]\ncommand = \"sleep\"\n";
    std::fs::write(&config, text).unwrap();
    let unit = dir.path().join("leadmaster-supervisord.service");
    let plan = lmsup::cli::startup::Plan::from_toml(text);
    std::fs::write(
        &unit,
        lmsup::cli::startup::unit(bin, &config, dir.path(), &plan),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify failed: {err}");
    assert!(
        !err.contains(&unit.display().to_string()),
        "warnings about the unit: {err}"
    );

    // `lmctl startup` prints the same unit for a real config.
    let printed = Command::new(crate::harness::LMCTL)
        .arg("--config")
        .arg(&config)
        .arg("startup")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&printed.stdout);
    assert!(
        text.contains("Type=notify")
            && text.contains(&format!(
                "--config {}",
                config.canonicalize().unwrap().display()
            )),
        "{text}"
    );
}
