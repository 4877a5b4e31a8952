//! `serin-proxy init`: the iptables NAT rules that send a pod's TCP through its proxy.
//!
//! The rules live in chains of their own so that installing them twice, or removing them,
//! never touches anybody else's rules:
//!
//! ```text
//! nat PREROUTING -> SERIN_INBOUND:  skip ports RETURN, then -> SERIN_INBOUND_REDIRECT (REDIRECT to the inbound listener)
//! nat OUTPUT     -> SERIN_OUTBOUND: the proxy's own UID RETURN (its upstream connections are not
//!                                   captured again), loopback RETURN, skip ports RETURN,
//!                                   then -> SERIN_OUTBOUND_REDIRECT (REDIRECT to the outbound listener)
//! raw OUTPUT     -> SERIN_NOTRACK (only packets leaving over lo): TCP from 127.0.0.0/8 to
//!                                   127.0.0.0/8: CT --notrack
//! ```
//!
//! Why the raw rule: a NAT rule makes the kernel track every connection of the pod's network
//! namespace, and tracking costs CPU on every packet. REDIRECT needs it for the connections it
//! redirects (their replies are translated back by the tracked entry), but the loopback legs
//! the proxy adds (to the app on the inbound side, to upstreams on 127.0.0.1) are never
//! translated: they need no entry. A redirected connection never matches: its packets to the
//! proxy leave with a non-loopback destination (the Service or pod address, before the
//! REDIRECT), and the proxy's replies go to that connection's non-loopback source (Linux
//! refuses a loopback source for a non-loopback route), so only connections whose both ends
//! are loopback addresses go untracked, and those are exactly the ones the nat rules RETURN.
//! A packet that passes lo keeps the tracking decision made as it left (raw OUTPUT), so no
//! PREROUTING rule is needed. Unlike the nat chains (which see only a connection's first
//! packet) the raw chain sees every packet, so its rules are the cheapest the kernel has: the
//! jump matches the output interface only (no comment match, which iptables-nft evaluates
//! through the slower x_tables compatibility layer), and the chain compares addresses.
//! `--track-loopback` keeps the chain empty, for a pod whose own rules match loopback traffic
//! by conntrack state.
//!
//! [`Plan`] is pure (the rules as `iptables-restore` input and the jumps); [`Iptables`] runs
//! them with the chosen backend (iptables-nft or iptables-legacy). This module does not decide
//! which ports a pod needs: the injector passes them as flags.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::process::{Command, Stdio};

/// Chain holding the inbound skip rules (jumped to from `PREROUTING`).
pub const INBOUND_CHAIN: &str = "SERIN_INBOUND";
/// Chain redirecting inbound TCP to the inbound listener.
pub const INBOUND_REDIRECT_CHAIN: &str = "SERIN_INBOUND_REDIRECT";
/// Chain holding the outbound skip rules (jumped to from `OUTPUT`).
pub const OUTBOUND_CHAIN: &str = "SERIN_OUTBOUND";
/// Chain redirecting outbound TCP to the outbound listener.
pub const OUTBOUND_REDIRECT_CHAIN: &str = "SERIN_OUTBOUND_REDIRECT";
/// Chain (raw table) exempting loopback-only TCP from connection tracking.
pub const NOTRACK_CHAIN: &str = "SERIN_NOTRACK";
/// Serin's chains by table, in the order they are removed.
const CHAINS: [(&str, &str); 5] = [
    ("nat", INBOUND_CHAIN),
    ("nat", OUTBOUND_CHAIN),
    ("nat", INBOUND_REDIRECT_CHAIN),
    ("nat", OUTBOUND_REDIRECT_CHAIN),
    ("raw", NOTRACK_CHAIN),
];
/// Comment on the two jumps, so a reader of `iptables-save` knows who put them there.
const COMMENT: &str = "serin-proxy capture";

/// What to capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureConfig {
    /// Port of the proxy's inbound listener (inbound TCP is redirected there).
    pub inbound_port: u16,
    /// Port of the proxy's outbound listener (outbound TCP is redirected there).
    pub outbound_port: u16,
    /// UID the proxy runs as: its connections are never captured (no loop).
    pub proxy_uid: u32,
    /// Inbound destination ports left alone (e.g. the proxy's admin port, SSH, a database).
    pub skip_inbound_ports: BTreeSet<u16>,
    /// Outbound destination ports left alone.
    pub skip_outbound_ports: BTreeSet<u16>,
    /// Keep connection tracking for loopback-only TCP (by default it is exempted; see the
    /// module docs).
    pub track_loopback: bool,
}

/// The rules of one [`CaptureConfig`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// `iptables-restore --noflush` input for the nat table: declares (and so empties) Serin's
    /// four nat chains and fills them. Other chains are untouched.
    pub restore: String,
    /// The same for the raw table: Serin's loopback conntrack exemption.
    pub restore_raw: String,
    /// The jumps from the built-in chains into Serin's, added only when missing.
    pub jumps: Vec<Jump>,
}

/// A rule in a built-in chain jumping to one of Serin's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jump {
    /// `nat` or `raw`.
    pub table: &'static str,
    /// The built-in chain.
    pub chain: &'static str,
    /// The rule's arguments.
    pub args: Vec<String>,
}

impl CaptureConfig {
    /// The rules for this configuration.
    pub fn plan(&self) -> Plan {
        let mut r = String::from("*nat\n");
        for c in [
            INBOUND_CHAIN,
            INBOUND_REDIRECT_CHAIN,
            OUTBOUND_CHAIN,
            OUTBOUND_REDIRECT_CHAIN,
        ] {
            r.push_str(&format!(":{c} - [0:0]\n"));
        }
        r.push_str(&format!(
            "-A {INBOUND_REDIRECT_CHAIN} -p tcp -j REDIRECT --to-ports {}\n",
            self.inbound_port
        ));
        // The proxy's own listeners are never redirected: a request to them is for them.
        let inbound_skips: BTreeSet<u16> = self.skip_inbound_ports.clone();
        for p in &inbound_skips {
            r.push_str(&format!(
                "-A {INBOUND_CHAIN} -p tcp --dport {p} -j RETURN\n"
            ));
        }
        r.push_str(&format!(
            "-A {INBOUND_CHAIN} -p tcp -j {INBOUND_REDIRECT_CHAIN}\n"
        ));
        r.push_str(&format!(
            "-A {OUTBOUND_REDIRECT_CHAIN} -p tcp -j REDIRECT --to-ports {}\n",
            self.outbound_port
        ));
        // Order matters: the UID rule comes first so that nothing the proxy sends is ever
        // redirected back to itself, whatever the other rules say.
        r.push_str(&format!(
            "-A {OUTBOUND_CHAIN} -m owner --uid-owner {} -j RETURN\n",
            self.proxy_uid
        ));
        r.push_str(&format!("-A {OUTBOUND_CHAIN} -o lo -j RETURN\n"));
        r.push_str(&format!("-A {OUTBOUND_CHAIN} -d 127.0.0.0/8 -j RETURN\n"));
        for p in &self.skip_outbound_ports {
            r.push_str(&format!(
                "-A {OUTBOUND_CHAIN} -p tcp --dport {p} -j RETURN\n"
            ));
        }
        r.push_str(&format!(
            "-A {OUTBOUND_CHAIN} -p tcp -j {OUTBOUND_REDIRECT_CHAIN}\n"
        ));
        r.push_str("COMMIT\n");
        let mut raw = format!("*raw\n:{NOTRACK_CHAIN} - [0:0]\n");
        if !self.track_loopback {
            raw.push_str(&format!(
                "-A {NOTRACK_CHAIN} -s 127.0.0.0/8 -d 127.0.0.0/8 -p tcp -j CT --notrack\n"
            ));
        }
        raw.push_str("COMMIT\n");
        let jump = |table: &'static str, chain: &'static str, args: &[&str]| Jump {
            table,
            chain,
            args: args.iter().map(|s| s.to_string()).collect(),
        };
        let commented =
            |to: &'static str| ["-p", "tcp", "-m", "comment", "--comment", COMMENT, "-j", to];
        Plan {
            restore: r,
            restore_raw: raw,
            jumps: vec![
                jump("nat", "PREROUTING", &commented(INBOUND_CHAIN)),
                jump("nat", "OUTPUT", &commented(OUTBOUND_CHAIN)),
                jump("raw", "OUTPUT", &["-o", "lo", "-j", NOTRACK_CHAIN]),
            ],
        }
    }
}

impl Plan {
    /// The plan as a reviewer reads it (`serin-proxy init --dry-run`): the restore inputs, then
    /// the jump commands.
    pub fn render(&self, iptables: &str) -> String {
        let mut s = String::new();
        for input in [&self.restore, &self.restore_raw] {
            s.push_str(&format!("# {iptables}-restore --noflush <<EOF\n"));
            s.push_str(input);
            s.push_str("# EOF\n");
        }
        for j in &self.jumps {
            s.push_str(&format!(
                "{iptables} -t {} -A {} {}\n",
                j.table,
                j.chain,
                j.args
                    .iter()
                    .map(|a| if a.contains(' ') {
                        format!("{a:?}")
                    } else {
                        a.clone()
                    })
                    .collect::<Vec<_>>()
                    .join(" ")
            ));
        }
        s
    }
}

/// Which iptables backend to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Whichever the node already uses (see [`choose_mode`]).
    Auto,
    /// `iptables-nft` (nf_tables kernel API).
    Nft,
    /// `iptables-legacy` (x_tables kernel API).
    Legacy,
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Mode::Auto),
            "nft" => Ok(Mode::Nft),
            "legacy" => Ok(Mode::Legacy),
            _ => Err(format!(
                "{s:?} is not an iptables mode (accepted: auto, nft, legacy)"
            )),
        }
    }
}

/// Picks the backend the node's other rules use: a pod's rules must sit in the same kernel API
/// as kube-proxy's and the CNI's, or the two sets would not see each other. Counts the rule
/// lines each `*-save` printed; legacy wins only with more rules (new nodes default to nft).
pub fn choose_mode(nft_save: Option<&str>, legacy_save: Option<&str>) -> Option<Mode> {
    let rules = |s: &str| s.lines().filter(|l| l.starts_with("-A ")).count();
    match (nft_save, legacy_save) {
        (Some(n), Some(l)) if rules(l) > rules(n) => Some(Mode::Legacy),
        (Some(_), _) => Some(Mode::Nft),
        (None, Some(_)) => Some(Mode::Legacy),
        (None, None) => None,
    }
}

/// Why installing or removing the rules failed.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// No iptables binary of the wanted kind was found.
    #[error(
        "no usable iptables found ({wanted}); install the `iptables` package (it provides iptables-nft and iptables-legacy)"
    )]
    NoIptables {
        /// What was looked for.
        wanted: String,
    },
    /// iptables refused for lack of privileges.
    #[error(
        "{command} was refused: the NET_ADMIN and NET_RAW capabilities are missing (in Kubernetes, add them to this init container's securityContext.capabilities.add; locally, run as root): {stderr}"
    )]
    Capabilities {
        /// The command line.
        command: String,
        /// What iptables said.
        stderr: String,
    },
    /// iptables failed for another reason.
    #[error("{command} failed ({status}): {stderr}")]
    Failed {
        /// The command line.
        command: String,
        /// Exit status.
        status: String,
        /// What iptables said.
        stderr: String,
    },
    /// iptables could not be started.
    #[error("cannot run {command}: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// What [`Iptables::install`] did beyond the capture rules.
#[derive(Debug)]
pub struct Installed {
    /// Why the loopback conntrack exemption is not installed, when it is not.
    pub notrack_skipped: Option<CaptureError>,
}

/// One iptables backend, run as child processes.
#[derive(Debug, Clone)]
pub struct Iptables {
    /// `iptables-nft`, `iptables-legacy` or plain `iptables`.
    pub bin: String,
}

struct Output {
    ok: bool,
    status: String,
    stdout: String,
    stderr: String,
}

impl Iptables {
    /// The backend for `mode` (for `Auto`, whichever the node uses).
    pub fn detect(mode: Mode) -> Result<Iptables, CaptureError> {
        let try_save = |bin: &str| -> Option<String> {
            let out = Command::new(format!("{bin}-save"))
                .args(["-t", "nat"])
                .stdin(Stdio::null())
                .output()
                .ok()?;
            // A `-save` that fails for lack of privileges still tells us the binary exists.
            Some(String::from_utf8_lossy(&out.stdout).into_owned())
        };
        let exists = |bin: &str| {
            Command::new(bin)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok()
        };
        let pick = |bin: &str| Iptables {
            bin: bin.to_string(),
        };
        match mode {
            Mode::Nft if exists("iptables-nft") => Ok(pick("iptables-nft")),
            Mode::Legacy if exists("iptables-legacy") => Ok(pick("iptables-legacy")),
            Mode::Nft | Mode::Legacy => Err(CaptureError::NoIptables {
                wanted: format!(
                    "iptables-{}",
                    if mode == Mode::Nft { "nft" } else { "legacy" }
                ),
            }),
            Mode::Auto => {
                let nft = exists("iptables-nft")
                    .then(|| try_save("iptables-nft"))
                    .flatten();
                let legacy = exists("iptables-legacy")
                    .then(|| try_save("iptables-legacy"))
                    .flatten();
                match choose_mode(nft.as_deref(), legacy.as_deref()) {
                    Some(Mode::Legacy) => Ok(pick("iptables-legacy")),
                    Some(_) => Ok(pick("iptables-nft")),
                    None if exists("iptables") => Ok(pick("iptables")),
                    None => Err(CaptureError::NoIptables {
                        wanted: "iptables-nft, iptables-legacy or iptables".into(),
                    }),
                }
            }
        }
    }

    fn run(
        &self,
        suffix: &str,
        args: &[&str],
        stdin: Option<&str>,
    ) -> Result<Output, CaptureError> {
        let bin = format!("{}{suffix}", self.bin);
        let command = format!("{bin} {}", args.join(" "));
        let mut child = Command::new(&bin)
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| CaptureError::Spawn {
                command: command.clone(),
                source,
            })?;
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            // A write error surfaces as iptables' own failure below.
            let _ = pipe.write_all(input.as_bytes());
        }
        let out = child
            .wait_with_output()
            .map_err(|source| CaptureError::Spawn {
                command: command.clone(),
                source,
            })?;
        Ok(Output {
            ok: out.status.success(),
            status: out.status.to_string(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }

    fn check(
        &self,
        suffix: &str,
        args: &[&str],
        stdin: Option<&str>,
    ) -> Result<String, CaptureError> {
        let out = self.run(suffix, args, stdin)?;
        if out.ok {
            return Ok(out.stdout);
        }
        let command = format!("{}{suffix} {}", self.bin, args.join(" "));
        Err(classify(command, out.status, out.stderr))
    }

    /// Installs `plan`: Serin's chains are (re)written whole, the jumps added when missing.
    /// Running it twice leaves the same rules as running it once. The loopback conntrack
    /// exemption only saves CPU (capture works the same without it), so a kernel that refuses
    /// it (no raw table or CT target) leaves the capture rules installed and the refusal in
    /// [`Installed::notrack_skipped`] for the caller to report.
    pub fn install(&self, plan: &Plan) -> Result<Installed, CaptureError> {
        self.check("-restore", &["--noflush"], Some(&plan.restore))?;
        for j in plan.jumps.iter().filter(|j| j.table == "nat") {
            self.add_jump(j)?;
        }
        let notrack = self
            .check("-restore", &["--noflush"], Some(&plan.restore_raw))
            .and_then(|_| {
                plan.jumps
                    .iter()
                    .filter(|j| j.table == "raw")
                    .try_for_each(|j| self.add_jump(j))
            });
        match notrack {
            Ok(()) => Ok(Installed {
                notrack_skipped: None,
            }),
            Err(e @ CaptureError::Capabilities { .. }) => Err(e),
            Err(e) => Ok(Installed {
                notrack_skipped: Some(e),
            }),
        }
    }

    fn add_jump(&self, j: &Jump) -> Result<(), CaptureError> {
        let args: Vec<&str> = j.args.iter().map(String::as_str).collect();
        let mut check = vec!["-t", j.table, "-C", j.chain];
        check.extend(&args);
        let present = self.run("", &check, None)?;
        if present.ok {
            return Ok(());
        }
        if is_permission(&present.stderr) {
            return Err(classify(
                format!("{} {}", self.bin, check.join(" ")),
                present.status,
                present.stderr,
            ));
        }
        let mut add = vec!["-t", j.table, "-A", j.chain];
        add.extend(&args);
        self.check("", &add, None).map(|_| ())
    }

    /// Removes the jumps and Serin's chains in both tables; a no-op when they are not there.
    pub fn remove(&self, plan: &Plan) -> Result<(), CaptureError> {
        for j in &plan.jumps {
            let args: Vec<&str> = j.args.iter().map(String::as_str).collect();
            let mut del = vec!["-t", j.table, "-D", j.chain];
            del.extend(&args);
            // Delete every copy (an older, non-idempotent install may have left two).
            loop {
                let out = self.run("", &del, None)?;
                if out.ok {
                    continue;
                }
                if is_permission(&out.stderr) {
                    return Err(classify(
                        format!("{} {}", self.bin, del.join(" ")),
                        out.status,
                        out.stderr,
                    ));
                }
                break;
            }
        }
        let mut present = Vec::new();
        for table in ["nat", "raw"] {
            let saved = match self.check("-save", &["-t", table], None) {
                Ok(s) => s,
                // A kernel without a raw table has no Serin chain in it either.
                Err(CaptureError::Failed { .. }) if table == "raw" => continue,
                Err(e) => return Err(e),
            };
            present.extend(
                CHAINS
                    .iter()
                    .filter(|(t, c)| {
                        *t == table && saved.lines().any(|l| l.starts_with(&format!(":{c} ")))
                    })
                    .copied(),
            );
        }
        for op in ["-F", "-X"] {
            for (table, chain) in &present {
                self.check("", &["-t", table, op, chain], None)?;
            }
        }
        Ok(())
    }

    /// The nat table as `iptables-save` prints it.
    pub fn save(&self) -> Result<String, CaptureError> {
        self.check("-save", &["-t", "nat"], None)
    }
}

fn is_permission(stderr: &str) -> bool {
    let s = stderr.to_ascii_lowercase();
    s.contains("permission denied") || s.contains("operation not permitted")
}

fn classify(command: String, status: String, stderr: String) -> CaptureError {
    if is_permission(&stderr) {
        CaptureError::Capabilities { command, stderr }
    } else {
        CaptureError::Failed {
            command,
            status,
            stderr,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> CaptureConfig {
        CaptureConfig {
            inbound_port: 4143,
            outbound_port: 4140,
            proxy_uid: 2102,
            skip_inbound_ports: [4191, 22].into(),
            skip_outbound_ports: [3306].into(),
            track_loopback: false,
        }
    }

    #[test]
    fn the_plan_redirects_inbound_and_outbound_and_exempts_the_proxy_loopback_and_skip_ports() {
        let p = cfg().plan();
        let expected = "*nat
:SERIN_INBOUND - [0:0]
:SERIN_INBOUND_REDIRECT - [0:0]
:SERIN_OUTBOUND - [0:0]
:SERIN_OUTBOUND_REDIRECT - [0:0]
-A SERIN_INBOUND_REDIRECT -p tcp -j REDIRECT --to-ports 4143
-A SERIN_INBOUND -p tcp --dport 22 -j RETURN
-A SERIN_INBOUND -p tcp --dport 4191 -j RETURN
-A SERIN_INBOUND -p tcp -j SERIN_INBOUND_REDIRECT
-A SERIN_OUTBOUND_REDIRECT -p tcp -j REDIRECT --to-ports 4140
-A SERIN_OUTBOUND -m owner --uid-owner 2102 -j RETURN
-A SERIN_OUTBOUND -o lo -j RETURN
-A SERIN_OUTBOUND -d 127.0.0.0/8 -j RETURN
-A SERIN_OUTBOUND -p tcp --dport 3306 -j RETURN
-A SERIN_OUTBOUND -p tcp -j SERIN_OUTBOUND_REDIRECT
COMMIT
";
        assert_eq!(p.restore, expected);
        let jumps: Vec<(&str, &str, Option<&str>)> = p
            .jumps
            .iter()
            .map(|j| (j.table, j.chain, j.args.last().map(String::as_str)))
            .collect();
        assert_eq!(
            jumps,
            [
                ("nat", "PREROUTING", Some(INBOUND_CHAIN)),
                ("nat", "OUTPUT", Some(OUTBOUND_CHAIN)),
                ("raw", "OUTPUT", Some(NOTRACK_CHAIN)),
            ]
        );
    }

    #[test]
    fn only_loopback_to_loopback_tcp_goes_untracked_unless_tracking_is_kept() {
        let p = cfg().plan();
        assert_eq!(
            p.restore_raw,
            "*raw
:SERIN_NOTRACK - [0:0]
-A SERIN_NOTRACK -s 127.0.0.0/8 -d 127.0.0.0/8 -p tcp -j CT --notrack
COMMIT
"
        );
        // Kept: the chain is still declared (so a second init with the flag empties it).
        let kept = CaptureConfig {
            track_loopback: true,
            ..cfg()
        }
        .plan();
        assert_eq!(kept.restore_raw, "*raw\n:SERIN_NOTRACK - [0:0]\nCOMMIT\n");
        assert_eq!(kept.restore, p.restore);
    }

    #[test]
    fn the_dry_run_shows_the_restore_input_and_the_jump_commands() {
        let text = cfg().plan().render("iptables-nft");
        assert!(text.starts_with("# iptables-nft-restore --noflush <<EOF\n*nat\n"));
        assert!(text.contains(
            "iptables-nft -t nat -A OUTPUT -p tcp -m comment --comment \"serin-proxy capture\" -j SERIN_OUTBOUND\n"
        ));
        assert!(
            text.contains("<<EOF\n*raw\n:SERIN_NOTRACK - [0:0]\n"),
            "{text}"
        );
        assert!(text.contains("iptables-nft -t raw -A OUTPUT -o lo -j SERIN_NOTRACK\n"));
    }

    #[test]
    fn the_mode_follows_the_backend_holding_the_nodes_rules() {
        let some = "*nat\n-A KUBE-SERVICES -j X\n-A POSTROUTING -j Y\n";
        let none = "*nat\n:PREROUTING ACCEPT [0:0]\n";
        assert_eq!(choose_mode(Some(none), Some(some)), Some(Mode::Legacy));
        assert_eq!(choose_mode(Some(some), Some(none)), Some(Mode::Nft));
        assert_eq!(choose_mode(Some(none), Some(none)), Some(Mode::Nft));
        assert_eq!(choose_mode(None, Some(none)), Some(Mode::Legacy));
        assert_eq!(choose_mode(None, None), None);
        assert!(
            "fast"
                .parse::<Mode>()
                .unwrap_err()
                .contains("auto, nft, legacy")
        );
    }

    #[test]
    fn a_permission_error_names_the_missing_capabilities() {
        let e = classify(
            "iptables-nft -t nat -C OUTPUT".into(),
            "exit status: 4".into(),
            "iptables v1.8.9 (nf_tables): Could not fetch rule set generation id: Permission denied (you must be root)".into(),
        );
        let msg = e.to_string();
        assert!(msg.contains("NET_ADMIN and NET_RAW"), "{msg}");
        assert!(matches!(
            classify("x".into(), "exit status: 2".into(), "Bad argument".into()),
            CaptureError::Failed { .. }
        ));
    }
}
