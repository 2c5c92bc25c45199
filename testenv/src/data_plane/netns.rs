//! A network namespace joined to the host by a veth pair, for backends whose addresses
//! the API server accepts in an EndpointSlice (it refuses loopback ones).

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
};

use crate::TestEnvError;

/// Every namespace this crate makes is named `<PREFIX><pid>-<n>`, so that one left by a
/// killed test binary can be recognised (its pid no longer runs) and deleted.
const PREFIX: &str = "switchyard-dp-";
/// /30 blocks in 10.128.0.0/10: 2^20 of them, far from the API server's service range.
const BLOCKS: u32 = 1 << 20;
const ATTEMPTS: u32 = 64;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A network namespace with one address, [`NetNs::addr`], that the host reaches through
/// a veth pair. Dropping it deletes the namespace, which takes the veth pair with it.
#[derive(Debug)]
pub(crate) struct NetNs {
    name: String,
    addr: Ipv4Addr,
}

impl NetNs {
    /// Creates the namespace and the veth pair. Names and the /30 come from the pid and
    /// a counter, so parallel tests and test binaries do not collide; a block already on
    /// a host interface, or a name already taken, moves on to the next counter value.
    pub fn create() -> Result<Self, TestEnvError> {
        require_ip()?;
        delete_abandoned();
        let pid = std::process::id();
        let host_addrs = ip_stdout(&["-o", "-4", "addr", "show"])?;
        let mut last = String::new();
        for _ in 0..ATTEMPTS {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let block = pid.wrapping_mul(7919).wrapping_add(n) % BLOCKS;
            let base = u32::from(Ipv4Addr::new(10, 128, 0, 0)) + block * 4;
            let (host, inside) = (Ipv4Addr::from(base + 1), Ipv4Addr::from(base + 2));
            if host_addrs.contains(&format!("inet {host}/"))
                || host_addrs.contains(&format!("inet {inside}/"))
            {
                continue;
            }
            let name = format!("{PREFIX}{pid}-{n}");
            // Interface names are limited to 15 characters: "sy" + hex pid + counter.
            let tag = format!("sy{pid:x}x{n:x}");
            let (host_dev, inside_dev) = (format!("{tag}h"), format!("{tag}n"));
            if tag.len() + 1 > 15 {
                return Err(TestEnvError::Network(format!(
                    "device name {tag}h is longer than 15 characters"
                )));
            }
            if let Err(err) = ip(&["netns", "add", &name]) {
                last = err.to_string();
                continue;
            }
            let netns = NetNs { name, addr: inside };
            let host_cidr = format!("{host}/30");
            let inside_cidr = format!("{inside}/30");
            let n = netns.name.as_str();
            let steps: [&[&str]; 7] = [
                &[
                    "link",
                    "add",
                    &host_dev,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    &inside_dev,
                ],
                &["link", "set", &inside_dev, "netns", n],
                &["addr", "add", &host_cidr, "dev", &host_dev],
                &["link", "set", &host_dev, "up"],
                &["-n", n, "addr", "add", &inside_cidr, "dev", &inside_dev],
                &["-n", n, "link", "set", &inside_dev, "up"],
                &["-n", n, "link", "set", "lo", "up"],
            ];
            match steps.iter().try_for_each(|args| ip(args)) {
                Ok(()) => return Ok(netns),
                // Dropping `netns` deletes the namespace; a host-side veth whose peer
                // never moved in is deleted by hand.
                Err(err) => {
                    let _ = ip(&["link", "delete", &host_dev]);
                    last = err.to_string();
                }
            }
        }
        Err(TestEnvError::Network(format!(
            "no free network namespace after {ATTEMPTS} attempts; last: {last}"
        )))
    }

    /// The address inside the namespace.
    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    /// The namespace's handle, for `setns(2)`.
    pub fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        if let Err(err) = ip(&["netns", "delete", &self.name]) {
            eprintln!("switchyard-testenv: {err}");
        }
    }
}

/// Moves the calling thread into the namespace at `path`; every socket it opens from
/// then on belongs to that namespace (and keeps it when used from other threads).
pub(crate) fn enter(path: &Path) -> Result<(), TestEnvError> {
    let file = std::fs::File::open(path).map_err(|source| TestEnvError::Io {
        path: path.to_owned(),
        source,
    })?;
    use std::os::fd::AsRawFd;
    // SAFETY: setns(2) on a file descriptor we own; it changes only this thread.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(TestEnvError::Io {
            path: path.to_owned(),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// Deletes the namespaces of test binaries that died without cleaning up (SIGKILL).
fn delete_abandoned() {
    let Ok(list) = ip_stdout(&["netns", "list"]) else {
        return;
    };
    for name in list
        .lines()
        .filter_map(|line| line.split_whitespace().next())
    {
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = ip(&["netns", "delete", name]);
        }
    }
}

fn require_ip() -> Result<(), TestEnvError> {
    match Command::new("ip").arg("-V").output() {
        Ok(out) if out.status.success() => Ok(()),
        _ => Err(TestEnvError::Network(
            "`ip` (iproute2) is required: apt-get install iproute2; the data plane also \
             needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN)"
                .into(),
        )),
    }
}

fn ip(args: &[&str]) -> Result<(), TestEnvError> {
    ip_stdout(args).map(drop)
}

fn ip_stdout(args: &[&str]) -> Result<String, TestEnvError> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .map_err(|source| TestEnvError::Spawn {
            program: "ip".into(),
            source,
        })?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(TestEnvError::Network(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}
