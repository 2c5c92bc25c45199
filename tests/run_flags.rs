//! `switchyard run`'s environment-variable fallbacks, read through clap as the binary
//! reads them. Setting environment variables is only sound while no other thread reads
//! them, so this binary holds this one test and nothing else.

use std::{net::SocketAddr, time::Duration};

use clap::Parser;
use switchyard::runtime::{LogFormat, RunOptions};

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    run: RunOptions,
}

fn parse(args: &[&str]) -> RunOptions {
    Cli::try_parse_from(std::iter::once("switchyard").chain(args.iter().copied()))
        .unwrap_or_else(|err| panic!("{err}"))
        .run
}

fn set(name: &str, value: &str) {
    // SAFETY: this test binary runs this single test, on one thread; nothing else reads
    // the environment meanwhile.
    unsafe { std::env::set_var(name, value) }
}

fn unset(name: &str) {
    // SAFETY: as in `set`.
    unsafe { std::env::remove_var(name) }
}

#[test]
fn every_setting_falls_back_to_its_environment_variable() {
    for name in [
        "SWITCHYARD_NAMESPACES",
        "SWITCHYARD_HTTP_ADDR",
        "SWITCHYARD_LOG_FORMAT",
        "SWITCHYARD_LEADER_ELECTION",
        "SWITCHYARD_LEASE_NAME",
        "SWITCHYARD_LEASE_NAMESPACE",
        "SWITCHYARD_LEASE_DURATION",
        "SWITCHYARD_MAX_CONCURRENT_RECONCILES",
        "SWITCHYARD_API_WRITE_TIMEOUT",
        "SWITCHYARD_PER_WAVE_METRICS",
        "POD_NAME",
        "POD_NAMESPACE",
    ] {
        unset(name);
    }

    // The defaults.
    let defaults = parse(&[]);
    assert!(defaults.watched_namespaces().is_empty(), "all namespaces");
    assert_eq!(
        defaults.http_addr,
        "0.0.0.0:8080".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(defaults.log_format, LogFormat::Text);
    assert!(defaults.leader_election);
    assert_eq!(defaults.lease_name, "switchyard");
    assert_eq!(defaults.lease_duration, Duration::from_secs(15));
    assert_eq!(defaults.max_concurrent_reconciles, 32);
    assert_eq!(defaults.api_write_timeout, Duration::from_secs(5));
    assert!(
        !defaults.per_wave_metrics,
        "per-wave series are off by default"
    );
    assert!(
        defaults
            .identity()
            .ends_with(&format!("-{}", std::process::id()))
    );

    // Every variable.
    set("SWITCHYARD_NAMESPACES", "crm,billing");
    set("SWITCHYARD_HTTP_ADDR", "127.0.0.1:9000");
    set("SWITCHYARD_LOG_FORMAT", "json");
    set("SWITCHYARD_LEADER_ELECTION", "false");
    set("SWITCHYARD_LEASE_NAME", "switchyard-crm");
    set("SWITCHYARD_LEASE_DURATION", "9s");
    set("SWITCHYARD_MAX_CONCURRENT_RECONCILES", "4");
    set("SWITCHYARD_API_WRITE_TIMEOUT", "2s");
    set("SWITCHYARD_PER_WAVE_METRICS", "true");
    set("POD_NAME", "switchyard-5d8f7-x2x9q");
    set("POD_NAMESPACE", "switchyard-system");
    let from_env = parse(&[]);
    assert_eq!(from_env.watched_namespaces(), ["crm", "billing"]);
    assert_eq!(
        from_env.http_addr,
        "127.0.0.1:9000".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(from_env.log_format, LogFormat::Json);
    assert!(!from_env.leader_election);
    assert_eq!(from_env.max_concurrent_reconciles, 4);
    assert_eq!(from_env.api_write_timeout, Duration::from_secs(2));
    assert!(from_env.per_wave_metrics);
    let lease = from_env.lease();
    assert_eq!(lease.name, "switchyard-crm");
    assert_eq!(lease.duration, Duration::from_secs(9));
    assert_eq!(lease.identity, "switchyard-5d8f7-x2x9q");
    assert_eq!(lease.namespace, "switchyard-system", "from POD_NAMESPACE");

    // SWITCHYARD_LEASE_NAMESPACE beats POD_NAMESPACE, and flags beat both.
    set("SWITCHYARD_LEASE_NAMESPACE", "leases");
    assert_eq!(parse(&[]).lease().namespace, "leases");
    let flags = parse(&[
        "--lease-namespace",
        "ops",
        "--namespaces",
        "sales",
        "--leader-election",
        "true",
        "--identity",
        "replica-1",
    ]);
    assert_eq!(flags.lease().namespace, "ops");
    assert_eq!(flags.watched_namespaces(), ["sales"]);
    assert!(flags.leader_election);
    assert_eq!(flags.identity(), "replica-1");

    // An empty list is all namespaces; booleans are read leniently.
    set("SWITCHYARD_NAMESPACES", "");
    set("SWITCHYARD_LEADER_ELECTION", "0");
    let lenient = parse(&[]);
    assert!(lenient.watched_namespaces().is_empty());
    assert!(!lenient.leader_election);

    // A bad value in the environment is refused, as a bad flag would be.
    set("SWITCHYARD_MAX_CONCURRENT_RECONCILES", "0");
    assert!(
        Cli::try_parse_from(["switchyard"]).is_err(),
        "no reconciles at all"
    );
    set("SWITCHYARD_MAX_CONCURRENT_RECONCILES", "4");
    set("SWITCHYARD_API_WRITE_TIMEOUT", "0s");
    assert!(
        Cli::try_parse_from(["switchyard"]).is_err(),
        "a write must have some time"
    );
    set("SWITCHYARD_API_WRITE_TIMEOUT", "2s");
    set("SWITCHYARD_PER_WAVE_METRICS", "true");
    set("SWITCHYARD_LEASE_DURATION", "1s");
    assert!(Cli::try_parse_from(["switchyard"]).is_err());
}
