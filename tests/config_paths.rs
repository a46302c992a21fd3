//! Running from anywhere: the real binary started in an empty folder, with a config file in
//! another folder whose relative paths resolve against that file's folder, and with no config
//! file at all (the bundled agents and scenarios). Calls come from SIPp and reach the
//! receptionist through the in-process simulator.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use support::agent::{scenario_with_speech, sim_sessions};
use support::{assert_sipp_ok, msg, relay_binary, sipp, Relay};

/// One booking call by SIPp that the agent ends; returns the simulator's session.
fn booking_call(relay: &Relay) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    let sc = scenario_with_speech(dir.path(), "agent_booking.xml", 1500);
    let run = sipp(relay, sc.to_str().unwrap(), &["-m", "1"]);
    assert_sipp_ok(&run, 1, relay);
    let end = relay.wait_calls_ended(1, Duration::from_secs(30)).remove(0);
    assert_eq!(end["reason"], "agent_end_call", "{}", relay.dump());
    sim_sessions(relay).remove(0)
}

/// `voxrelay check-config ARGS` run in `cwd` with only `env`; (exit code, stdout, stderr).
fn check_config(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(relay_binary())
        .arg("check-config")
        .args(args)
        .current_dir(cwd)
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A config folder: `relay.toml` naming `agents/` (a receptionist of its own), a scenario
/// file and a SQLite file, all by relative paths.
fn config_folder() -> tempfile::TempDir {
    let conf = tempfile::tempdir().unwrap();
    let p = conf.path();
    std::fs::create_dir(p.join("agents")).unwrap();
    std::fs::write(
        p.join("agents/receptionist.toml"),
        "description = \"Books appointments.\"\n\
         instructions = \"You are the receptionist of Hilltop Surgery.\"\n\
         tools = [\"check_availability\", \"create_booking\", \"cancel_booking\", \"find_bookings\", \"end_call\"]\n",
    )
    .unwrap();
    std::fs::create_dir(p.join("scenarios")).unwrap();
    let booking = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("config/scenarios/booking.toml"),
    )
    .unwrap();
    let mine = booking.replacen("name = \"booking\"", "name = \"mine\"", 1);
    assert_ne!(mine, booking);
    std::fs::write(p.join("scenarios/mine.toml"), mine).unwrap();
    std::fs::write(
        p.join("relay.toml"),
        "[agents]\ndefault = \"receptionist\"\ndir = \"agents\"\n\
         [sim]\nscenario = \"scenarios/mine.toml\"\n\
         [booking]\ndatabase_url = \"sqlite://data.db\"\n",
    )
    .unwrap();
    conf
}

#[test]
fn relative_paths_in_a_config_file_resolve_against_its_folder_from_any_working_directory() {
    let conf = config_folder();
    let real = std::fs::canonicalize(conf.path()).unwrap();
    let file = conf.path().join("relay.toml");
    let relay = Relay::start_with(
        &["--config", file.to_str().unwrap()],
        &[
            // the file says which agent and database: take away the harness's overrides
            ("VOXRELAY__AGENTS__DEFAULT", ""),
            ("VOXRELAY__BOOKING__DATABASE_URL", ""),
        ],
    );
    let sim = relay.wait_for(
        |v| msg(v).starts_with("no OPENAI_API_KEY"),
        Duration::from_secs(5),
    );
    assert_eq!(
        sim["scenario"],
        real.join("scenarios/mine.toml").display().to_string()
    );
    let session = booking_call(&relay);
    assert_eq!(session["scenario"], "mine", "{session:#}");
    let instructions = session["session"]["instructions"].as_str().unwrap_or("");
    assert!(
        instructions.contains("Hilltop Surgery"),
        "the folder's receptionist replaces the bundled one: {session:#}"
    );
    assert!(
        real.join("data.db").is_file(),
        "the database is beside the file"
    );
    assert!(!relay.dir().join("data.db").exists());

    // check-config, from another folder and with the file named relatively, prints the
    // resolved paths
    let cwd = conf.path().parent().unwrap();
    let rel = file.strip_prefix(cwd).unwrap();
    let (code, out, err) = check_config(cwd, &["--config", rel.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{err}");
    let shown = parse(&out);
    assert_eq!(
        shown["agents"]["dir"].as_str(),
        Some(real.join("agents").to_str().unwrap()),
        "{out}"
    );
    assert_eq!(
        shown["sim"]["scenario"].as_str(),
        Some(real.join("scenarios/mine.toml").to_str().unwrap()),
        "{out}"
    );
    assert_eq!(
        shown["booking"]["database_url"].as_str(),
        Some(format!("sqlite://{}", real.join("data.db").display()).as_str()),
        "{out}"
    );
    // a relative path from the environment is the working directory's
    let (code, out, _) = check_config(
        cwd,
        &["--config", rel.to_str().unwrap()],
        &[("VOXRELAY__AGENTS__DIR", "elsewhere/agents")],
    );
    assert_eq!(code, 0);
    assert_eq!(
        parse(&out)["agents"]["dir"].as_str(),
        Some("elsewhere/agents"),
        "{out}"
    );
}

/// check-config's output as TOML.
fn parse(out: &str) -> toml::Table {
    toml::from_str(out).unwrap_or_else(|e| panic!("{e}\n{out}"))
}

#[test]
fn check_config_never_prints_a_database_password() {
    let empty = tempfile::tempdir().unwrap();
    let (code, out, err) = check_config(
        empty.path(),
        &[],
        &[(
            "VOXRELAY__BOOKING__DATABASE_URL",
            "postgres://relay:hunter2@db.example/clinic?sslmode=require&PassWord=hunter3",
        )],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("postgres://relay:***@db.example/clinic?sslmode=require&PassWord=***"),
        "{out}"
    );
    assert!(
        !out.contains("hunter") && !err.contains("hunter"),
        "{out}{err}"
    );
}

#[test]
fn with_no_config_file_the_bundled_receptionist_answers_in_an_empty_folder() {
    let relay = Relay::start(&[("VOXRELAY__AGENTS__DEFAULT", "receptionist")]);
    assert!(!relay.dir().join("config").exists());
    let session = booking_call(&relay);
    assert_eq!(session["scenario"], "booking");
    let instructions = session["session"]["instructions"].as_str().unwrap_or("");
    assert!(
        instructions.contains("Riverside Family Clinic"),
        "the bundled receptionist: {session:#}"
    );

    // check-config in an empty folder: the defaults, the bundled agents only
    let empty = tempfile::tempdir().unwrap();
    let (code, out, err) = check_config(empty.path(), &[], &[]);
    assert_eq!(code, 0, "{err}");
    let shown = parse(&out);
    assert_eq!(shown["agents"]["default"].as_str(), Some("receptionist"));
    assert!(
        shown["agents"].get("dir").is_none(),
        "no agents folder: {out}"
    );
}
