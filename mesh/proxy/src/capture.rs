//! `serin-proxy init`: the iptables NAT rules that send a pod's TCP through its proxy.
//!
//! Both IP families get the same rules ([`Family`]): `iptables` for IPv4 and `ip6tables` for
//! IPv6, with the same chains, ports, UID exemption and conntrack exemptions, the same backend
//! (nft or legacy, chosen once), and only the loopback network differing (`127.0.0.0/8`,
//! `::1/128`; IPv6 also leaves link-local destinations alone). IPv6 is captured when the pod's namespace has it (`--ipv6 auto`, see
//! [`ipv6_decision`]); an install is whole or nothing: when the IPv6 rules fail, the IPv4 ones
//! go again, so a pod never runs with one family captured and the other silently not.
//!
//! The rules live in chains of their own so that installing them twice, or removing them,
//! never touches anybody else's rules:
//!
//! ```text
//! nat PREROUTING -> SERIN_INBOUND:  skip ports RETURN, then -> SERIN_INBOUND_REDIRECT (REDIRECT SYNs to the inbound listener)
//! nat OUTPUT     -> SERIN_OUTBOUND: the proxy's own UID RETURN (its upstream connections are not
//!                                   captured again), loopback RETURN, skip ports RETURN,
//!                                   then -> SERIN_OUTBOUND_REDIRECT (REDIRECT SYNs to the outbound listener)
//! raw OUTPUT     -> SERIN_NOTRACK (only packets leaving over lo): TCP from 127.0.0.0/8 to
//!                                   127.0.0.0/8: CT --notrack
//! raw OUTPUT     -> SERIN_NOTRACK_OUT (TCP not leaving over lo): from an ephemeral port, of the
//!                                   proxy's UID or to an outbound skip port: CT --notrack
//! raw PREROUTING -> SERIN_NOTRACK_IN (TCP not arriving over lo): to an ephemeral port, of an
//!                                   existing local socket (`-m socket`): CT --notrack
//! ```
//!
//! Why the raw rules: a NAT rule makes the kernel track every connection of the pod's network
//! namespace, and tracking costs CPU on every packet. REDIRECT needs it for the connections it
//! redirects (their replies are translated back by the tracked entry); every other connection
//! of the pod only pays. Two kinds are exempted:
//!
//! - **Loopback-only TCP** (the proxy's legs to the app on the inbound side, to upstreams on
//!   127.0.0.1). A redirected connection never matches: its packets to the proxy leave with a
//!   non-loopback destination (the Service or pod address, before the REDIRECT), and the proxy's
//!   replies go to that connection's non-loopback source (Linux refuses a loopback source for a
//!   non-loopback route), so only connections whose both ends are loopback addresses go
//!   untracked, and those are exactly the ones the nat rules RETURN. A packet that passes lo
//!   keeps the tracking decision made as it left (raw OUTPUT), so no PREROUTING rule is needed.
//! - **Connections the pod opens that no rule translates**: the proxy's own upstream
//!   connections (its UID, RETURNed by the nat OUTPUT chain) and the app's connections to the
//!   outbound skip ports, in both directions. The raw table runs before conntrack, so it cannot
//!   ask conntrack which connection a packet belongs to; it tells them apart by what the kernel
//!   does know: a connection the pod opens has a source port from `ip_local_port_range` (the
//!   kernel picks it there at `connect`), while the proxy's replies on the connections it
//!   accepted (redirected, so tracked) come from its listener ports. Leaving: TCP from an
//!   ephemeral port whose socket belongs to the proxy's UID, or whose destination port is an
//!   outbound skip port. Arriving: TCP to an ephemeral port that matches an existing socket of
//!   this namespace (`-m socket`, which finds established sockets by their exact four-tuple).
//!   `-m socket` also matches a listener bound to a specific address (never a wildcard one:
//!   `--nowildcard` is deliberately not used, it would match every new inbound connection to a
//!   `0.0.0.0` listener and let it bypass the inbound capture), so the rule only looks at
//!   ephemeral destination ports, and every port init knows something listens on (the proxy's
//!   listeners and the inbound skip ports) is RETURNed first when it lies in that range (an
//!   app listening on its pod IP, not `0.0.0.0`, on another port of the range has its inbound
//!   connections bypass the capture; they could not be captured anyway: the inbound proxy
//!   connects to the app at `127.0.0.1:<port>`, where such an app has nothing, so capture needs
//!   the app on `0.0.0.0` or `127.0.0.1` first, see mesh/proxy/README.md). A
//!   redirected inbound connection's packets carry the app's port before the REDIRECT, which
//!   no established socket has (the proxy's accepted socket is on the inbound port), so they
//!   stay tracked and translated.
//!
//! What the upstream exemption saves is measured in mesh/proxy/README.md ("What transparent
//! capture costs"): per packet it trades conntrack work for rule evaluation (CPU-neutral on
//! iptables-nft, whose `owner` and `socket` matches run through the x_tables compatibility
//! layer; a small saving on iptables-legacy), and it always saves the node-wide conntrack
//! table an entry per upstream connection.
//!
//! Should a packet of an untracked connection ever reach conntrack (its socket gone, say),
//! conntrack may pick the connection up mid-stream (`nf_conntrack_tcp_loose`) as a new one and
//! pass it through the nat chains: the REDIRECT rules only take SYNs, so such a packet is never
//! sent to a listener that has no connection for it.
//!
//! Unlike the nat chains (which see only a connection's first packet) the raw chains see every
//! packet, so their jumps match interfaces and the protocol only (no comment match, which
//! iptables-nft evaluates through the slower x_tables compatibility layer). `--track-loopback`
//! and `--track-upstream` keep the chains empty, for a pod whose own rules match such traffic by
//! conntrack state.
//!
//! [`Plan`] is pure (the rules of one family as `iptables-restore` input and the jumps);
//! [`Iptables`] runs them with the chosen backend (iptables-nft or iptables-legacy, and their
//! `ip6tables` twins). This module does not decide
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
/// Chain (raw table, `OUTPUT`) exempting the untranslated connections the pod opens.
pub const NOTRACK_OUT_CHAIN: &str = "SERIN_NOTRACK_OUT";
/// Chain (raw table, `PREROUTING`) exempting those connections' replies.
pub const NOTRACK_IN_CHAIN: &str = "SERIN_NOTRACK_IN";
/// Serin's chains by table, in the order they are removed.
const CHAINS: [(&str, &str); 7] = [
    ("nat", INBOUND_CHAIN),
    ("nat", OUTBOUND_CHAIN),
    ("nat", INBOUND_REDIRECT_CHAIN),
    ("nat", OUTBOUND_REDIRECT_CHAIN),
    ("raw", NOTRACK_CHAIN),
    ("raw", NOTRACK_OUT_CHAIN),
    ("raw", NOTRACK_IN_CHAIN),
];
/// Comment on the two nat jumps, so a reader of `iptables-save` knows who put them there.
const COMMENT: &str = "serin-proxy capture";
/// The kernel's default `net.ipv4.ip_local_port_range`.
pub const DEFAULT_LOCAL_PORT_RANGE: (u16, u16) = (32768, 60999);
/// Copies of one jump `remove` deletes at most (each install adds at most one).
const MAX_COPIES: usize = 64;
/// Ports one `-m multiport` list holds.
const MULTIPORT_MAX: usize = 15;

/// The IP family a set of rules is for: IPv4 rules go to `iptables`, IPv6 rules to `ip6tables`
/// (two separate rule sets in the kernel: one family's rules never see the other's packets).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Family {
    /// IPv4, `iptables`.
    V4,
    /// IPv6, `ip6tables`.
    V6,
}

impl Family {
    /// Both families, in the order they are installed.
    pub const ALL: [Family; 2] = [Family::V4, Family::V6];

    /// The tool's name without its backend suffix: `iptables` or `ip6tables`.
    pub fn tool(self) -> &'static str {
        match self {
            Family::V4 => "iptables",
            Family::V6 => "ip6tables",
        }
    }

    /// `IPv4` or `IPv6`, for messages.
    pub fn name(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }

    /// The loopback network: never captured, and the both-ends-loopback exemption's match.
    /// IPv6 has one loopback address, IPv4 a whole /8.
    pub fn loopback(self) -> &'static str {
        match self {
            Family::V4 => "127.0.0.0/8",
            Family::V6 => "::1/128",
        }
    }
}

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
    /// Keep connection tracking for the proxy's upstream connections and the app's connections
    /// to outbound skip ports (by default they are exempted; see the module docs).
    pub track_upstream: bool,
    /// The namespace's `net.ipv4.ip_local_port_range` (first, last): the source ports of the
    /// connections the pod opens.
    pub local_port_range: (u16, u16),
}

/// One raw-table exemption from connection tracking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exemption {
    /// Loopback-only TCP ([`NOTRACK_CHAIN`]).
    Loopback,
    /// The connections the pod opens that no rule translates ([`NOTRACK_OUT_CHAIN`],
    /// [`NOTRACK_IN_CHAIN`]).
    Upstream,
}

/// The raw-table rules of one [`Exemption`]: installed whole or not at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Untrack {
    /// Which exemption.
    pub what: Exemption,
    /// `iptables-restore --noflush` input for the raw table: declares (and so empties) the
    /// exemption's chains and, unless tracking is kept, fills them.
    pub restore: String,
    /// The jumps from the built-in raw chains, added only when missing.
    pub jumps: Vec<Jump>,
}

/// The rules of one [`CaptureConfig`] for one [`Family`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The family these rules are for (which tool runs them).
    pub family: Family,
    /// `iptables-restore --noflush` input for the nat table: declares (and so empties) Serin's
    /// four nat chains and fills them. Other chains are untouched.
    pub restore: String,
    /// The jumps from the built-in nat chains into Serin's, added only when missing.
    pub jumps: Vec<Jump>,
    /// The conntrack exemptions, in the order they are installed.
    pub untrack: Vec<Untrack>,
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

impl Jump {
    fn new(table: &'static str, chain: &'static str, args: &[&str]) -> Jump {
        Jump {
            table,
            chain,
            args: args.iter().map(|s| s.to_string()).collect(),
        }
    }
}

/// `-m multiport --<flag> a,b,c` clauses for `ports`, at most [`MULTIPORT_MAX`] ports each
/// (the match's limit).
fn multiport(flag: &str, ports: &BTreeSet<u16>) -> Vec<String> {
    let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
    ports
        .chunks(MULTIPORT_MAX)
        .map(|c| format!("-m multiport --{flag} {}", c.join(",")))
        .collect()
}

/// Parses `net.ipv4.ip_local_port_range` as `/proc/sys/net/ipv4/ip_local_port_range` shows it
/// (`first<TAB>last`).
pub fn parse_port_range(s: &str) -> Result<(u16, u16), String> {
    let mut it = s.split_whitespace().map(str::parse::<u16>);
    match (it.next(), it.next(), it.next()) {
        (Some(Ok(lo)), Some(Ok(hi)), None) if 0 < lo && lo <= hi => Ok((lo, hi)),
        _ => Err(format!(
            "{:?} is not a port range (expected two ports, first <= last, as in \"32768 60999\")",
            s.trim()
        )),
    }
}

/// Where the kernel shows the network namespace's ephemeral port range.
pub const LOCAL_PORT_RANGE: &str = "/proc/sys/net/ipv4/ip_local_port_range";

/// What `serin-proxy init` is asked to do, as far as the ephemeral port range is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitAction {
    /// Install the rules (`init`).
    Install,
    /// Print them without touching anything (`init --dry-run`).
    DryRun,
    /// Delete them (`init --remove`).
    Remove,
}

/// Where the range `init` plans with came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortRangeSource {
    /// Read from [`LOCAL_PORT_RANGE`].
    Read,
    /// The kernel's default, assumed because the file did not read (the error, for a warning).
    AssumedDefault(String),
    /// Not read: removal deletes the jumps and Serin's chains whole, and neither depends on
    /// the range.
    NotNeeded,
}

/// The ephemeral port range for `init`'s plan. `read` reads [`LOCAL_PORT_RANGE`] and is called
/// only when the range matters: installing (the upstream exemption's rules name it) and the
/// dry run (which prints them). An unreadable range is an error for an install that wants the
/// upstream exemption (it would otherwise exempt the wrong ports), and the kernel's default
/// otherwise; a range that reads but does not parse is an error whenever it is read.
pub fn local_port_range_for(
    action: InitAction,
    track_upstream: bool,
    read: impl FnOnce() -> std::io::Result<String>,
) -> Result<((u16, u16), PortRangeSource), String> {
    if action == InitAction::Remove {
        return Ok((DEFAULT_LOCAL_PORT_RANGE, PortRangeSource::NotNeeded));
    }
    match read() {
        Ok(s) => parse_port_range(&s)
            .map(|r| (r, PortRangeSource::Read))
            .map_err(|e| format!("{LOCAL_PORT_RANGE}: {e}")),
        Err(e) if action == InitAction::DryRun || track_upstream => Ok((
            DEFAULT_LOCAL_PORT_RANGE,
            PortRangeSource::AssumedDefault(format!("{LOCAL_PORT_RANGE}: {e}")),
        )),
        Err(e) => Err(format!(
            "cannot read {LOCAL_PORT_RANGE} (the ephemeral port range the upstream conntrack exemption needs): {e}; pass --track-upstream to install without it"
        )),
    }
}

impl CaptureConfig {
    /// The IPv4 rules for this configuration.
    pub fn plan(&self) -> Plan {
        self.plan_for(Family::V4)
    }

    /// The rules for this configuration in `family`. The two families get the same chains,
    /// ports, UID exemption and conntrack exemptions; only the loopback network differs, and
    /// IPv6 also leaves link-local destinations (`fe80::/10`) uncaptured.
    /// (`net.ipv4.ip_local_port_range` is the ephemeral range of IPv6 sockets too.)
    pub fn plan_for(&self, family: Family) -> Plan {
        let loopback = family.loopback();
        let mut r = String::from("*nat\n");
        for c in [
            INBOUND_CHAIN,
            INBOUND_REDIRECT_CHAIN,
            OUTBOUND_CHAIN,
            OUTBOUND_REDIRECT_CHAIN,
        ] {
            r.push_str(&format!(":{c} - [0:0]\n"));
        }
        // Only SYNs are redirected: a connection's first packet is its SYN, unless conntrack
        // picked an untracked connection up mid-stream, which must not go to the proxy.
        r.push_str(&format!(
            "-A {INBOUND_REDIRECT_CHAIN} -p tcp --syn -j REDIRECT --to-ports {}\n",
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
            "-A {OUTBOUND_REDIRECT_CHAIN} -p tcp --syn -j REDIRECT --to-ports {}\n",
            self.outbound_port
        ));
        // Order matters: the UID rule comes first so that nothing the proxy sends is ever
        // redirected back to itself, whatever the other rules say.
        r.push_str(&format!(
            "-A {OUTBOUND_CHAIN} -m owner --uid-owner {} -j RETURN\n",
            self.proxy_uid
        ));
        r.push_str(&format!("-A {OUTBOUND_CHAIN} -o lo -j RETURN\n"));
        r.push_str(&format!("-A {OUTBOUND_CHAIN} -d {loopback} -j RETURN\n"));
        if family == Family::V6 {
            // Link-local destinations are left alone: the original destination the kernel
            // gives back for a redirected connection carries no interface (scope id), so the
            // proxy could not reach a link-local address again.
            r.push_str(&format!("-A {OUTBOUND_CHAIN} -d fe80::/10 -j RETURN\n"));
        }
        for p in &self.skip_outbound_ports {
            r.push_str(&format!(
                "-A {OUTBOUND_CHAIN} -p tcp --dport {p} -j RETURN\n"
            ));
        }
        r.push_str(&format!(
            "-A {OUTBOUND_CHAIN} -p tcp -j {OUTBOUND_REDIRECT_CHAIN}\n"
        ));
        r.push_str("COMMIT\n");
        let commented =
            |to: &'static str| ["-p", "tcp", "-m", "comment", "--comment", COMMENT, "-j", to];
        Plan {
            family,
            restore: r,
            jumps: vec![
                Jump::new("nat", "PREROUTING", &commented(INBOUND_CHAIN)),
                Jump::new("nat", "OUTPUT", &commented(OUTBOUND_CHAIN)),
            ],
            untrack: vec![self.untrack_loopback(family), self.untrack_upstream()],
        }
    }

    fn untrack_loopback(&self, family: Family) -> Untrack {
        let mut raw = format!("*raw\n:{NOTRACK_CHAIN} - [0:0]\n");
        if !self.track_loopback {
            let lo = family.loopback();
            raw.push_str(&format!(
                "-A {NOTRACK_CHAIN} -s {lo} -d {lo} -p tcp -j CT --notrack\n"
            ));
        }
        raw.push_str("COMMIT\n");
        Untrack {
            what: Exemption::Loopback,
            restore: raw,
            jumps: vec![Jump::new(
                "raw",
                "OUTPUT",
                &["-o", "lo", "-j", NOTRACK_CHAIN],
            )],
        }
    }

    fn untrack_upstream(&self) -> Untrack {
        let mut raw = format!("*raw\n:{NOTRACK_OUT_CHAIN} - [0:0]\n:{NOTRACK_IN_CHAIN} - [0:0]\n");
        if !self.track_upstream {
            let (lo, hi) = self.local_port_range;
            let ephemeral = format!("{lo}:{hi}");
            // Ports something in the pod listens on: replies on the connections accepted there
            // come from them, and new connections go to them. Only those inside the ephemeral
            // range could be mistaken for an opened connection's port.
            let listening: BTreeSet<u16> = [self.inbound_port, self.outbound_port]
                .into_iter()
                .chain(self.skip_inbound_ports.iter().copied())
                .filter(|p| (lo..=hi).contains(p))
                .collect();
            for m in multiport("sports", &listening) {
                raw.push_str(&format!("-A {NOTRACK_OUT_CHAIN} -p tcp {m} -j RETURN\n"));
            }
            raw.push_str(&format!(
                "-A {NOTRACK_OUT_CHAIN} -p tcp --sport {ephemeral} -m owner --uid-owner {} -j CT --notrack\n",
                self.proxy_uid
            ));
            for m in multiport("dports", &self.skip_outbound_ports) {
                raw.push_str(&format!(
                    "-A {NOTRACK_OUT_CHAIN} -p tcp --sport {ephemeral} {m} -j CT --notrack\n"
                ));
            }
            for m in multiport("dports", &listening) {
                raw.push_str(&format!("-A {NOTRACK_IN_CHAIN} -p tcp {m} -j RETURN\n"));
            }
            raw.push_str(&format!(
                "-A {NOTRACK_IN_CHAIN} -p tcp --dport {ephemeral} -m socket -j CT --notrack\n"
            ));
        }
        raw.push_str("COMMIT\n");
        Untrack {
            what: Exemption::Upstream,
            restore: raw,
            jumps: vec![
                Jump::new(
                    "raw",
                    "OUTPUT",
                    &["!", "-o", "lo", "-p", "tcp", "-j", NOTRACK_OUT_CHAIN],
                ),
                Jump::new(
                    "raw",
                    "PREROUTING",
                    &["!", "-i", "lo", "-p", "tcp", "-j", NOTRACK_IN_CHAIN],
                ),
            ],
        }
    }
}

impl Plan {
    /// Every jump: the nat ones, then the raw ones.
    pub fn all_jumps(&self) -> impl Iterator<Item = &Jump> {
        self.jumps
            .iter()
            .chain(self.untrack.iter().flat_map(|u| &u.jumps))
    }

    /// The plan as a reviewer reads it (`serin-proxy init --dry-run`): the restore inputs, then
    /// the jump commands.
    pub fn render(&self, iptables: &str) -> String {
        let mut s = String::new();
        for input in std::iter::once(&self.restore).chain(self.untrack.iter().map(|u| &u.restore)) {
            s.push_str(&format!("# {iptables}-restore --noflush <<EOF\n"));
            s.push_str(input);
            s.push_str("# EOF\n");
        }
        for j in self.all_jumps() {
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

/// Whether `serin-proxy init` captures IPv6 too (`--ipv6`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ipv6Mode {
    /// Capture IPv6 when the pod's network namespace has it (see [`ipv6_in_namespace`]).
    Auto,
    /// Capture IPv6, and fail when the pod has none.
    On,
    /// IPv4 only: the pod's IPv6 connections bypass the proxy.
    Off,
}

impl std::str::FromStr for Ipv6Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Ipv6Mode::Auto),
            "on" => Ok(Ipv6Mode::On),
            "off" => Ok(Ipv6Mode::Off),
            _ => Err(format!(
                "{s:?} is not an IPv6 capture mode (accepted: auto, on, off)"
            )),
        }
    }
}

/// Where the kernel shows whether the namespace's loopback interface has IPv6. Both ends of
/// IPv6 capture need it: REDIRECT sends the app's outbound IPv6 connections to `[::1]`, and
/// the proxy's outbound IPv6 listener is bound there.
pub const IPV6_LOOPBACK: &str = "/proc/sys/net/ipv6/conf/lo/disable_ipv6";

/// Whether the pod's network namespace has IPv6 (`read` reads [`IPV6_LOOPBACK`]): `Err` says
/// why not, for the user.
pub fn ipv6_in_namespace(read: impl FnOnce() -> std::io::Result<String>) -> Result<(), String> {
    match read() {
        Ok(s) if s.trim() == "0" => Ok(()),
        Ok(s) => Err(format!(
            "IPv6 is switched off on its loopback interface: {IPV6_LOOPBACK} is {}",
            s.trim()
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err("the kernel has no IPv6 (no /proc/sys/net/ipv6)".into())
        }
        Err(e) => Err(format!("cannot read {IPV6_LOOPBACK}: {e}")),
    }
}

/// Where the kernel lists the namespace's IPv6 addresses, one a line: the address in 32 hex
/// digits, the interface index, the prefix length, the scope, the flags and the interface.
pub const IPV6_ADDRESSES: &str = "/proc/net/if_inet6";

/// Whether the pod was given an IPv6 address of its own (`read` reads [`IPV6_ADDRESSES`]): one
/// of global scope (`00`; ULAs included) on any interface. `::1` (host scope) and `fe80::/10`
/// (link scope) do not count: every pod of an IPv4-only cluster has those, and capturing IPv6
/// there only risks failing the pod on a node whose kernel has no IPv6 NAT, for traffic that
/// cannot exist. `Err` says why not, for the user.
pub fn ipv6_address_in_namespace(
    read: impl FnOnce() -> std::io::Result<String>,
) -> Result<(), String> {
    let listed = match read() {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!("the kernel has no IPv6 (no {IPV6_ADDRESSES})"));
        }
        Err(e) => return Err(format!("cannot read {IPV6_ADDRESSES}: {e}")),
    };
    let global = listed.lines().any(|l| {
        let fields: Vec<&str> = l.split_whitespace().collect();
        fields.len() >= 6 && fields[3] == "00"
    });
    if global {
        Ok(())
    } else {
        Err(format!(
            "no IPv6 address of global scope in {IPV6_ADDRESSES}, only loopback or link-local ones: an IPv4-only cluster"
        ))
    }
}

/// What the pod's network namespace has of IPv6, as `init` reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodIpv6 {
    /// [`ipv6_in_namespace`]: IPv6 on loopback, which any IPv6 capture needs (`[::1]`).
    pub loopback: Result<(), String>,
    /// [`ipv6_address_in_namespace`]: an IPv6 address of the pod's own, which `auto` needs.
    pub address: Result<(), String>,
}

impl PodIpv6 {
    /// Reads both from the kernel.
    pub fn read() -> Self {
        Self {
            loopback: ipv6_in_namespace(|| std::fs::read_to_string(IPV6_LOOPBACK)),
            address: ipv6_address_in_namespace(|| std::fs::read_to_string(IPV6_ADDRESSES)),
        }
    }
}

/// What `init` does about IPv6.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ipv6Decision {
    /// Install (or remove) the IPv6 rules as well.
    Capture,
    /// IPv4 only; the line says why, for the init container's log.
    Skip(String),
}

/// Decides, purely, whether `init` installs, prints or removes IPv6 rules from what the pod
/// has (`pod`). Installing: `auto` captures IPv6 where the pod has IPv6 on loopback and an
/// IPv6 address of its own (a dual-stack or IPv6-only cluster), `on` needs only IPv6 on
/// loopback and fails without it (naming the flag), `off` never captures. A dry run prints both
/// families unless `off`. Removing takes away whatever a namespace with IPv6 may hold, whatever
/// the mode (a pod installed with `on` must not keep IPv6 rules because its removal said
/// `auto` or `off`).
pub fn ipv6_decision(
    mode: Ipv6Mode,
    action: InitAction,
    pod: &PodIpv6,
) -> Result<Ipv6Decision, String> {
    match (action, mode, &pod.loopback) {
        (InitAction::Remove, _, Ok(())) => Ok(Ipv6Decision::Capture),
        (InitAction::Remove, _, Err(why)) => Ok(Ipv6Decision::Skip(format!(
            "no IPv6 rules to remove: the pod has no IPv6 ({why})"
        ))),
        (_, Ipv6Mode::Off, _) => Ok(Ipv6Decision::Skip(
            "IPv6 not captured (--ipv6 off): the pod's IPv6 connections, in and out, bypass the proxy".into(),
        )),
        // A dry run is for review: it shows both families whatever this namespace has.
        (InitAction::DryRun, _, _) | (_, Ipv6Mode::On, Ok(())) => Ok(Ipv6Decision::Capture),
        (_, Ipv6Mode::Auto, Ok(())) => match &pod.address {
            Ok(()) => Ok(Ipv6Decision::Capture),
            Err(why) => Ok(Ipv6Decision::Skip(format!(
                "IPv4 captured only: the pod has no IPv6 address ({why}); --ipv6 on captures IPv6 all the same"
            ))),
        },
        (_, Ipv6Mode::Auto, Err(why)) => Ok(Ipv6Decision::Skip(format!(
            "IPv4 captured only: the pod has no IPv6 ({why})"
        ))),
        (_, Ipv6Mode::On, Err(why)) => Err(format!(
            "--ipv6 on: cannot capture IPv6: the pod has no IPv6 ({why}); use --ipv6 auto (IPv6 captured where the pod has an IPv6 address) or --ipv6 off"
        )),
    }
}

/// The tool a dry run names for `mode` and `family` (`ip6tables-nft`, `iptables`, ...).
pub fn tool_for(mode: Mode, family: Family) -> String {
    match mode {
        Mode::Legacy => format!("{}-legacy", family.tool()),
        Mode::Nft => format!("{}-nft", family.tool()),
        Mode::Auto => family.tool().to_string(),
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

/// What [`Iptables::remove_all`] did: each family's outcome, in order, then the failure it
/// stopped at, if any.
#[derive(Debug)]
pub struct Removals {
    /// The families handled before any failure.
    pub done: Vec<(Family, Removal)>,
    /// The family whose removal failed, and why (the families after it were not tried).
    pub failed: Option<(Family, CaptureError)>,
}

/// What [`Iptables::remove_all`] did for one family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    /// Its rules and chains are gone (or were never there).
    Removed,
    /// Its tool is not installed, so nothing can have been installed with it.
    NoTool,
    /// A legacy backend without the family's nat and raw tables: nothing to remove.
    NoTables,
}

/// What [`Iptables::install`] did beyond the capture rules.
#[derive(Debug)]
pub struct Installed {
    /// The conntrack exemptions the kernel refused (each left empty), with its refusal.
    pub skipped: Vec<(Exemption, CaptureError)>,
}

impl Installed {
    /// Why `what` is not installed, when it is not.
    pub fn skipped(&self, what: Exemption) -> Option<&CaptureError> {
        self.skipped
            .iter()
            .find(|(w, _)| *w == what)
            .map(|(_, e)| e)
    }
}

/// One iptables backend, run as child processes.
#[derive(Debug, Clone)]
pub struct Iptables {
    /// `iptables-nft`, `iptables-legacy` or plain `iptables`.
    pub bin: String,
}

/// Whether `bin` runs (`--version` touches no table).
fn exists(bin: &str) -> bool {
    Command::new(bin)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// `<bin>-save -t nat`'s output; None when the binary does not run or its backend does not
/// work here ([`save_outcome`]).
fn save_nat(bin: &str) -> Option<String> {
    let out = Command::new(format!("{bin}-save"))
        .args(["-t", "nat"])
        .stdin(Stdio::null())
        .output()
        .ok()?;
    save_outcome(
        out.status.success(),
        &String::from_utf8_lossy(&out.stdout),
        &String::from_utf8_lossy(&out.stderr),
    )
}

/// What one `*-save -t nat` run says about its backend: the rules it printed when it ran; an
/// empty listing when it failed only for lack of privileges (the backend is there, and
/// installing will name the missing capability); None when it failed otherwise: the backend
/// does not work on this node (iptables-nft on a kernel without nf_tables says "Failed to
/// initialize nft: Protocol not supported"), so it must not be chosen over one that does.
pub fn save_outcome(success: bool, stdout: &str, stderr: &str) -> Option<String> {
    if success {
        Some(stdout.to_string())
    } else if is_permission(stderr) {
        Some(String::new())
    } else {
        None
    }
}

/// The saves of every family of a backend, joined; None when none of them ran (the backend
/// does not work here).
fn joined(saves: Vec<String>) -> Option<String> {
    (!saves.is_empty()).then(|| saves.concat())
}

struct Output {
    ok: bool,
    status: String,
    stdout: String,
    stderr: String,
}

/// Where the kernel lists the iptables-legacy (x_tables) tables that exist in the reading
/// process's network namespace. Reading it loads and creates nothing, unlike
/// `iptables-legacy-save -t nat`, which creates an empty legacy nat table as a side effect
/// (and with it netfilter hooks every packet of the pod would then pass).
pub fn legacy_tables_names(family: Family) -> &'static str {
    match family {
        Family::V4 => "/proc/net/ip_tables_names",
        Family::V6 => "/proc/net/ip6_tables_names",
    }
}

/// Whether a `*_tables_names` listing holds the nat table. A file that does not read (the
/// x_tables module is not loaded) means no legacy table exists.
pub fn lists_nat(names: Option<&str>) -> bool {
    names.is_some_and(|n| n.lines().any(|l| l.trim() == "nat"))
}

impl Iptables {
    /// The backend for `mode` (for `Auto`, whichever the node uses), as the IPv4 tool; see
    /// [`Iptables::family`] for its IPv6 twin. Auto-detection creates no table: iptables-nft's
    /// save only reads, and iptables-legacy's save runs only for a family whose nat table
    /// already exists ([`legacy_tables_names`]).
    pub fn detect(mode: Mode) -> Result<Iptables, CaptureError> {
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
                // Rules of both families count: an IPv6-only node's rules are all in ip6tables.
                let nft = exists("iptables-nft")
                    .then(|| {
                        joined(
                            Family::ALL
                                .iter()
                                .filter_map(|f| save_nat(&format!("{}-nft", f.tool())))
                                .collect(),
                        )
                    })
                    .flatten();
                let legacy = exists("iptables-legacy").then(|| {
                    Family::ALL
                        .iter()
                        .filter(|f| {
                            lists_nat(
                                std::fs::read_to_string(legacy_tables_names(**f))
                                    .ok()
                                    .as_deref(),
                            )
                        })
                        .filter_map(|f| save_nat(&format!("{}-legacy", f.tool())))
                        .collect::<String>()
                });
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

    /// The same backend for `family`: `iptables-nft` gives `ip6tables-nft` for IPv6 (also
    /// inside a path: `/sbin/iptables` gives `/sbin/ip6tables`).
    pub fn family(&self, family: Family) -> Iptables {
        let (dir, name) = match self.bin.rsplit_once('/') {
            Some((dir, name)) => (format!("{dir}/"), name),
            None => (String::new(), self.bin.as_str()),
        };
        let bin = match name.strip_prefix("iptables") {
            Some(backend) => format!("{dir}{}{backend}", family.tool()),
            None => self.bin.clone(),
        };
        Iptables { bin }
    }

    /// Installs each plan with this backend's tool for its family, in order. When one fails,
    /// what this call installed is removed again (best effort), the failing family's own
    /// part included (its restore may have gone in, and some of its jumps), and the failing
    /// family is returned with its error: a pod never keeps one family captured and the
    /// other not.
    pub fn install_all(
        &self,
        plans: &[Plan],
    ) -> Result<Vec<(Family, Installed)>, (Family, CaptureError)> {
        let mut done: Vec<(Family, Installed)> = Vec::new();
        for plan in plans {
            match self.family(plan.family).install(plan) {
                Ok(installed) => done.push((plan.family, installed)),
                Err(e) => {
                    // The failing plan goes first: its restore is atomic, but the jumps
                    // after it are added one by one, and a removal is a no-op for what is
                    // not there.
                    for p in std::iter::once(plan).chain(
                        plans
                            .iter()
                            .filter(|p| done.iter().any(|(f, _)| *f == p.family)),
                    ) {
                        let _ = self.family(p.family).remove(p);
                    }
                    return Err((plan.family, e));
                }
            }
        }
        Ok(done)
    }

    /// Removes each plan's family with this backend (see [`Iptables::family`]), in order, and
    /// says what it did for each; it stops at the first family whose removal fails, whose
    /// error comes second. A family whose tool is not installed, or whose legacy tables do not
    /// exist, is skipped: nothing of Serin's can be there, and looking would create the tables
    /// (see [`Iptables::remove`]).
    pub fn remove_all(&self, plans: &[Plan]) -> Removals {
        let mut done = Vec::new();
        for plan in plans {
            let tool = self.family(plan.family);
            let outcome = if !tool.available() {
                Removal::NoTool
            } else if tool.has_nothing_to_remove() {
                Removal::NoTables
            } else if let Err(e) = tool.remove(plan) {
                return Removals {
                    done,
                    failed: Some((plan.family, e)),
                };
            } else {
                Removal::Removed
            };
            done.push((plan.family, outcome));
        }
        Removals { done, failed: None }
    }

    /// Whether this backend's binary runs at all (it may still lack kernel support).
    pub fn available(&self) -> bool {
        exists(&self.bin)
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
    /// Running it twice leaves the same rules as running it once. The conntrack exemptions only
    /// save CPU (capture works the same without them), so a kernel that refuses one (no raw
    /// table, no `CT` target, no `socket` or `owner` match) leaves the capture rules installed,
    /// that exemption's chains empty, and the refusal in [`Installed::skipped`] for the caller
    /// to report. An exemption is all or nothing: the OUTPUT half of the upstream one without
    /// its PREROUTING half would leave replies tracked on connections whose requests are not.
    pub fn install(&self, plan: &Plan) -> Result<Installed, CaptureError> {
        self.check("-restore", &["--noflush"], Some(&plan.restore))?;
        for j in &plan.jumps {
            self.add_jump(j)?;
        }
        // A jump an earlier version installed and this one does not would still send packets
        // through Serin's chains (twice, next to its successor).
        for j in &retired_jumps() {
            self.delete_jump(j)?;
        }
        let mut skipped = Vec::new();
        for u in &plan.untrack {
            let done = self
                .check("-restore", &["--noflush"], Some(&u.restore))
                .and_then(|_| u.jumps.iter().try_for_each(|j| self.add_jump(j)));
            match done {
                Ok(()) => {}
                Err(e @ CaptureError::Capabilities { .. }) => return Err(e),
                Err(e) => {
                    // Empty whatever part of it is there (an earlier install's rules, or the
                    // chains of a restore whose jumps failed); a kernel without a raw table
                    // refuses this too, and then there is nothing to empty.
                    let _ = self.check("-restore", &["--noflush"], Some(&declarations(&u.restore)));
                    skipped.push((u.what, e));
                }
            }
        }
        Ok(Installed { skipped })
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

    /// Deletes every copy of `j` (an older, non-idempotent install may have left two); a no-op
    /// when there is none.
    fn delete_jump(&self, j: &Jump) -> Result<(), CaptureError> {
        let args: Vec<&str> = j.args.iter().map(String::as_str).collect();
        let mut del = vec!["-t", j.table, "-D", j.chain];
        del.extend(&args);
        let command = || format!("{} {}", self.bin, del.join(" "));
        // Bounded: an iptables that reports success without deleting must not hang init.
        for _ in 0..MAX_COPIES {
            let out = self.run("", &del, None)?;
            if out.ok {
                continue;
            }
            if is_permission(&out.stderr) {
                return Err(classify(command(), out.status, out.stderr));
            }
            return Ok(());
        }
        Err(CaptureError::Failed {
            command: command(),
            status: "success".into(),
            stderr: format!("the rule is still there after {MAX_COPIES} deletions"),
        })
    }

    /// For a legacy backend, the tables of its family that exist ([`legacy_tables_names`]);
    /// `None` for nft. Any iptables-legacy call naming a table creates it (with netfilter hooks
    /// every packet then passes), so a removal touches only tables that are there: what is not
    /// there holds nothing of Serin's. (iptables-nft's calls create no table of their own.)
    fn legacy_tables(&self) -> Option<Vec<String>> {
        let name = self.bin.rsplit('/').next().unwrap_or(&self.bin);
        if !name.ends_with("-legacy") {
            return None;
        }
        let family = if name.starts_with(Family::V6.tool()) {
            Family::V6
        } else {
            Family::V4
        };
        let names = std::fs::read_to_string(legacy_tables_names(family)).unwrap_or_default();
        Some(names.lines().map(|l| l.trim().to_string()).collect())
    }

    /// Whether nothing of Serin's can be there to remove: a legacy backend whose family has
    /// neither a nat nor a raw table.
    pub fn has_nothing_to_remove(&self) -> bool {
        self.legacy_tables()
            .is_some_and(|t| !t.iter().any(|n| n == "nat" || n == "raw"))
    }

    /// Removes the jumps (the current ones and [`retired_jumps`]) and Serin's chains in both
    /// tables; a no-op when they are not there (and a legacy table that does not exist is not
    /// created by looking).
    pub fn remove(&self, plan: &Plan) -> Result<(), CaptureError> {
        let existing = self.legacy_tables();
        let exists = |table: &str| {
            existing
                .as_ref()
                .is_none_or(|t| t.iter().any(|n| n == table))
        };
        for j in plan
            .all_jumps()
            .chain(&retired_jumps())
            .filter(|j| exists(j.table))
        {
            self.delete_jump(j)?;
        }
        let mut present = Vec::new();
        for table in ["nat", "raw"].into_iter().filter(|t| exists(t)) {
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

/// Jumps earlier versions of `serin-proxy init` installed that the current plan does not:
/// `install` and `remove` delete them. The raw jump with a comment match (replaced by `-o lo`,
/// which iptables-nft evaluates natively) was installed by a few development commits only.
pub fn retired_jumps() -> Vec<Jump> {
    vec![Jump::new(
        "raw",
        "OUTPUT",
        &[
            "-p",
            "tcp",
            "-m",
            "comment",
            "--comment",
            COMMENT,
            "-j",
            NOTRACK_CHAIN,
        ],
    )]
}

/// The table and chain declarations of a restore input, without its rules: restoring it
/// empties those chains.
fn declarations(restore: &str) -> String {
    restore
        .lines()
        .filter(|l| l.starts_with('*') || l.starts_with(':') || *l == "COMMIT")
        .map(|l| format!("{l}\n"))
        .collect()
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
    use crate::testing::write_executable;

    fn cfg() -> CaptureConfig {
        CaptureConfig {
            inbound_port: 4143,
            outbound_port: 4140,
            proxy_uid: 2102,
            skip_inbound_ports: [4191, 22].into(),
            skip_outbound_ports: [3306].into(),
            track_loopback: false,
            track_upstream: false,
            local_port_range: DEFAULT_LOCAL_PORT_RANGE,
        }
    }

    fn raw(p: &Plan, what: Exemption) -> &Untrack {
        p.untrack
            .iter()
            .find(|u| u.what == what)
            .expect("every exemption is planned")
    }

    #[test]
    fn the_plan_redirects_inbound_and_outbound_and_exempts_the_proxy_loopback_and_skip_ports() {
        let p = cfg().plan();
        let expected = "*nat
:SERIN_INBOUND - [0:0]
:SERIN_INBOUND_REDIRECT - [0:0]
:SERIN_OUTBOUND - [0:0]
:SERIN_OUTBOUND_REDIRECT - [0:0]
-A SERIN_INBOUND_REDIRECT -p tcp --syn -j REDIRECT --to-ports 4143
-A SERIN_INBOUND -p tcp --dport 22 -j RETURN
-A SERIN_INBOUND -p tcp --dport 4191 -j RETURN
-A SERIN_INBOUND -p tcp -j SERIN_INBOUND_REDIRECT
-A SERIN_OUTBOUND_REDIRECT -p tcp --syn -j REDIRECT --to-ports 4140
-A SERIN_OUTBOUND -m owner --uid-owner 2102 -j RETURN
-A SERIN_OUTBOUND -o lo -j RETURN
-A SERIN_OUTBOUND -d 127.0.0.0/8 -j RETURN
-A SERIN_OUTBOUND -p tcp --dport 3306 -j RETURN
-A SERIN_OUTBOUND -p tcp -j SERIN_OUTBOUND_REDIRECT
COMMIT
";
        assert_eq!(p.restore, expected);
        let jumps: Vec<(&str, &str, Option<&str>)> = p
            .all_jumps()
            .map(|j| (j.table, j.chain, j.args.last().map(String::as_str)))
            .collect();
        assert_eq!(
            jumps,
            [
                ("nat", "PREROUTING", Some(INBOUND_CHAIN)),
                ("nat", "OUTPUT", Some(OUTBOUND_CHAIN)),
                ("raw", "OUTPUT", Some(NOTRACK_CHAIN)),
                ("raw", "OUTPUT", Some(NOTRACK_OUT_CHAIN)),
                ("raw", "PREROUTING", Some(NOTRACK_IN_CHAIN)),
            ]
        );
    }

    #[test]
    fn the_ipv6_plan_is_the_ipv4_plan_with_the_ipv6_loopback() {
        let v4 = cfg().plan();
        let v6 = cfg().plan_for(Family::V6);
        assert_eq!((v4.family, v6.family), (Family::V4, Family::V6));
        // Same chains, ports, UID and skip ports; ::1 where IPv4 has 127.0.0.0/8, and
        // link-local destinations left alone.
        assert_eq!(
            v6.restore,
            v4.restore.replace(
                "127.0.0.0/8 -j RETURN\n",
                "::1/128 -j RETURN\n-A SERIN_OUTBOUND -d fe80::/10 -j RETURN\n"
            )
        );
        assert!(!v4.restore.contains("fe80"));
        assert_eq!(
            raw(&v6, Exemption::Loopback).restore,
            "*raw\n:SERIN_NOTRACK - [0:0]\n-A SERIN_NOTRACK -s ::1/128 -d ::1/128 -p tcp -j CT --notrack\nCOMMIT\n"
        );
        assert_eq!(raw(&v6, Exemption::Upstream), raw(&v4, Exemption::Upstream));
        let jumps = |p: &Plan| p.all_jumps().cloned().collect::<Vec<_>>();
        assert_eq!(jumps(&v6), jumps(&v4));
        assert!(
            v6.render("ip6tables-nft")
                .starts_with("# ip6tables-nft-restore --noflush <<EOF\n*nat\n")
        );
    }

    #[test]
    fn each_family_uses_the_backend_chosen_once() {
        let ipt = |bin: &str| Iptables { bin: bin.into() };
        assert_eq!(ipt("iptables-nft").family(Family::V6).bin, "ip6tables-nft");
        assert_eq!(
            ipt("iptables-legacy").family(Family::V6).bin,
            "ip6tables-legacy"
        );
        assert_eq!(ipt("iptables").family(Family::V6).bin, "ip6tables");
        assert_eq!(
            ipt("/usr/sbin/iptables-nft").family(Family::V6).bin,
            "/usr/sbin/ip6tables-nft"
        );
        assert_eq!(ipt("iptables-nft").family(Family::V4).bin, "iptables-nft");
        assert_eq!(tool_for(Mode::Legacy, Family::V6), "ip6tables-legacy");
        assert_eq!(tool_for(Mode::Auto, Family::V4), "iptables");
    }

    #[test]
    fn a_legacy_nat_table_is_seen_in_the_table_names_without_creating_one() {
        assert!(lists_nat(Some("filter\nnat\n")));
        assert!(!lists_nat(Some("filter\nraw\n")));
        assert!(!lists_nat(Some("")));
        // No file: the x_tables module is not even loaded, so no legacy table exists.
        assert!(!lists_nat(None));
        assert_eq!(
            legacy_tables_names(Family::V6),
            "/proc/net/ip6_tables_names"
        );
    }

    #[test]
    fn ipv6_presence_is_read_from_the_loopback_interface() {
        assert_eq!(ipv6_in_namespace(|| Ok("0\n".into())), Ok(()));
        let off = ipv6_in_namespace(|| Ok("1\n".into())).unwrap_err();
        assert!(
            off.contains("switched off") && off.contains(IPV6_LOOPBACK),
            "{off}"
        );
        let none = ipv6_in_namespace(|| Err(std::io::ErrorKind::NotFound.into())).unwrap_err();
        assert!(none.contains("no IPv6"), "{none}");
    }

    #[test]
    fn an_ipv6_address_of_the_pods_own_is_one_of_global_scope() {
        // What an IPv4-only pod lists: ::1 (host scope, 10) and fe80:: on eth0 (link, 20).
        let v4_only = "00000000000000000000000000000001 01 80 10 80       lo\n\
                       fe80000000000000a8bbccfffe000001 02 40 20 80     eth0\n";
        let none = ipv6_address_in_namespace(|| Ok(v4_only.into())).unwrap_err();
        assert!(
            none.contains("global scope") && none.contains("IPv4-only"),
            "{none}"
        );
        // A dual-stack pod's ULA (or global unicast) address has scope 00.
        let dual = format!("{v4_only}fd000077000100000000000000000002 02 40 00 80     eth0\n");
        assert_eq!(ipv6_address_in_namespace(|| Ok(dual)), Ok(()));
        let gone = ipv6_address_in_namespace(|| Err(std::io::ErrorKind::NotFound.into()));
        assert!(gone.unwrap_err().contains("no IPv6"));
    }

    #[test]
    fn ipv6_capture_follows_the_flag_and_what_the_pod_has() {
        use Ipv6Decision::{Capture, Skip};
        let dual = || PodIpv6 {
            loopback: Ok(()),
            address: Ok(()),
        };
        // IPv4-only cluster: ::1 is there, no IPv6 address of the pod's own.
        let v4_only = || PodIpv6 {
            loopback: Ok(()),
            address: Err("no IPv6 address of global scope".to_string()),
        };
        let lacks = || PodIpv6 {
            loopback: Err("the kernel has no IPv6".to_string()),
            address: Err("the kernel has no IPv6".to_string()),
        };
        let skip = |d: Result<Ipv6Decision, String>| match d {
            Ok(Skip(why)) => why,
            other => panic!("expected a skip, got {other:?}"),
        };
        for mode in [Ipv6Mode::Auto, Ipv6Mode::On] {
            assert_eq!(
                ipv6_decision(mode, InitAction::Install, &dual()),
                Ok(Capture)
            );
            // A dry run shows both families, whatever this namespace has.
            assert_eq!(
                ipv6_decision(mode, InitAction::DryRun, &lacks()),
                Ok(Capture)
            );
        }
        let why = skip(ipv6_decision(Ipv6Mode::Auto, InitAction::Install, &lacks()));
        assert!(
            why.contains("IPv4 captured only") && why.contains("no IPv6"),
            "{why}"
        );
        // In an IPv4-only cluster `auto` leaves IPv6 alone; `on` captures it all the same.
        let why = skip(ipv6_decision(
            Ipv6Mode::Auto,
            InitAction::Install,
            &v4_only(),
        ));
        assert!(
            why.contains("no IPv6 address") && why.contains("--ipv6 on"),
            "{why}"
        );
        assert_eq!(
            ipv6_decision(Ipv6Mode::On, InitAction::Install, &v4_only()),
            Ok(Capture)
        );
        let e = ipv6_decision(Ipv6Mode::On, InitAction::Install, &lacks()).unwrap_err();
        assert!(
            e.starts_with("--ipv6 on") && e.contains("--ipv6 off"),
            "{e}"
        );
        for action in [InitAction::Install, InitAction::DryRun] {
            let why = skip(ipv6_decision(Ipv6Mode::Off, action, &dual()));
            assert!(
                why.contains("--ipv6 off") && why.contains("bypass"),
                "{why}"
            );
        }
        // Removal takes away what a namespace with IPv6 may hold, whatever the flag says and
        // whether or not the pod has an address of its own (`on` installs without one).
        for mode in [Ipv6Mode::Auto, Ipv6Mode::On, Ipv6Mode::Off] {
            for pod in [dual(), v4_only()] {
                assert_eq!(ipv6_decision(mode, InitAction::Remove, &pod), Ok(Capture));
            }
            assert!(matches!(
                ipv6_decision(mode, InitAction::Remove, &lacks()),
                Ok(Skip(_))
            ));
        }
        let e = "yes".parse::<Ipv6Mode>().unwrap_err();
        assert!(e.contains("auto, on, off"), "{e}");
    }

    #[test]
    fn only_loopback_to_loopback_tcp_goes_untracked_unless_tracking_is_kept() {
        let p = cfg().plan();
        assert_eq!(
            raw(&p, Exemption::Loopback).restore,
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
        assert_eq!(
            raw(&kept, Exemption::Loopback).restore,
            "*raw\n:SERIN_NOTRACK - [0:0]\nCOMMIT\n"
        );
        assert_eq!(kept.restore, p.restore);
        assert_eq!(
            raw(&kept, Exemption::Upstream),
            raw(&p, Exemption::Upstream)
        );
    }

    #[test]
    fn the_proxys_upstream_connections_and_skip_port_connections_go_untracked_both_ways() {
        let p = cfg().plan();
        let upstream = raw(&p, Exemption::Upstream);
        // Leaving: from an ephemeral port, the proxy's UID or an outbound skip port. Arriving:
        // to an ephemeral port of an existing socket (never --nowildcard: see the module docs).
        assert_eq!(
            upstream.restore,
            "*raw
:SERIN_NOTRACK_OUT - [0:0]
:SERIN_NOTRACK_IN - [0:0]
-A SERIN_NOTRACK_OUT -p tcp --sport 32768:60999 -m owner --uid-owner 2102 -j CT --notrack
-A SERIN_NOTRACK_OUT -p tcp --sport 32768:60999 -m multiport --dports 3306 -j CT --notrack
-A SERIN_NOTRACK_IN -p tcp --dport 32768:60999 -m socket -j CT --notrack
COMMIT
"
        );
        assert!(!upstream.restore.contains("nowildcard"));
        let args: Vec<String> = upstream.jumps.iter().map(|j| j.args.join(" ")).collect();
        assert_eq!(
            args,
            [
                "! -o lo -p tcp -j SERIN_NOTRACK_OUT",
                "! -i lo -p tcp -j SERIN_NOTRACK_IN"
            ]
        );
        // Kept: both chains declared and empty, the loopback exemption as before.
        let kept = CaptureConfig {
            track_upstream: true,
            ..cfg()
        }
        .plan();
        assert_eq!(
            raw(&kept, Exemption::Upstream).restore,
            "*raw\n:SERIN_NOTRACK_OUT - [0:0]\n:SERIN_NOTRACK_IN - [0:0]\nCOMMIT\n"
        );
        assert_eq!(
            raw(&kept, Exemption::Loopback),
            raw(&p, Exemption::Loopback)
        );
    }

    #[test]
    fn listening_ports_inside_the_ephemeral_range_are_never_untracked() {
        // A range that holds the inbound listener and one inbound skip port, and 20 outbound
        // skip ports (more than one multiport list takes).
        let c = CaptureConfig {
            local_port_range: (4000, 4150),
            skip_outbound_ports: (5000..5020).collect(),
            ..cfg()
        };
        let restore = raw(&c.plan(), Exemption::Upstream).restore.clone();
        let lines: Vec<&str> = restore.lines().collect();
        assert_eq!(
            lines[3],
            "-A SERIN_NOTRACK_OUT -p tcp -m multiport --sports 4140,4143 -j RETURN"
        );
        assert_eq!(
            lines[4],
            "-A SERIN_NOTRACK_OUT -p tcp --sport 4000:4150 -m owner --uid-owner 2102 -j CT --notrack"
        );
        let first: Vec<String> = (5000..5015).map(|p| p.to_string()).collect();
        assert_eq!(
            lines[5],
            format!(
                "-A SERIN_NOTRACK_OUT -p tcp --sport 4000:4150 -m multiport --dports {} -j CT --notrack",
                first.join(",")
            )
        );
        assert_eq!(
            lines[6],
            "-A SERIN_NOTRACK_OUT -p tcp --sport 4000:4150 -m multiport --dports 5015,5016,5017,5018,5019 -j CT --notrack"
        );
        assert_eq!(
            lines[7],
            "-A SERIN_NOTRACK_IN -p tcp -m multiport --dports 4140,4143 -j RETURN"
        );
        assert_eq!(
            lines[8],
            "-A SERIN_NOTRACK_IN -p tcp --dport 4000:4150 -m socket -j CT --notrack"
        );
        // 4191 and 22 (inbound skips) lie outside the range: no RETURN for them.
        assert!(
            !restore.contains("4191") && !restore.contains(",22"),
            "{restore}"
        );
    }

    #[test]
    fn only_installing_needs_the_local_port_range() {
        let unreadable = || Err(std::io::Error::from(std::io::ErrorKind::NotFound));
        // Removal never reads it (its jumps and chains do not depend on it) and never fails
        // for it, with or without --track-upstream.
        for track in [false, true] {
            let (_, source) = local_port_range_for(InitAction::Remove, track, || {
                panic!("removal read the port range")
            })
            .expect("removal needs no port range");
            assert_eq!(source, PortRangeSource::NotNeeded);
            assert!(local_port_range_for(InitAction::Remove, track, unreadable).is_ok());
        }
        // An install with the upstream exemption cannot do without it, and says how to.
        let e = local_port_range_for(InitAction::Install, false, unreadable).unwrap_err();
        assert!(
            e.contains(LOCAL_PORT_RANGE) && e.contains("--track-upstream"),
            "{e}"
        );
        // Without the exemption, or for a dry run, the kernel's default with a warning.
        for (action, track) in [(InitAction::Install, true), (InitAction::DryRun, false)] {
            let (range, source) = local_port_range_for(action, track, unreadable).unwrap();
            assert_eq!(range, DEFAULT_LOCAL_PORT_RANGE);
            assert!(
                matches!(source, PortRangeSource::AssumedDefault(ref w) if w.contains(LOCAL_PORT_RANGE))
            );
        }
        // A range that reads is used; one that does not parse is an error naming the file.
        let read = || Ok("4000\t4150\n".to_string());
        assert_eq!(
            local_port_range_for(InitAction::Install, false, read),
            Ok(((4000, 4150), PortRangeSource::Read))
        );
        let e = local_port_range_for(InitAction::Install, true, || Ok("x".into())).unwrap_err();
        assert!(e.starts_with(LOCAL_PORT_RANGE), "{e}");
    }

    #[test]
    fn the_local_port_range_parses_as_the_kernel_prints_it() {
        assert_eq!(parse_port_range("32768\t60999\n"), Ok((32768, 60999)));
        assert_eq!(parse_port_range("1024 1024"), Ok((1024, 1024)));
        for bad in ["", "60999 32768", "0 100", "1 2 3", "a b", "70000 80000"] {
            let e = parse_port_range(bad).unwrap_err();
            assert!(e.contains("not a port range"), "{bad}: {e}");
        }
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
        assert!(
            text.contains("<<EOF\n*raw\n:SERIN_NOTRACK_OUT - [0:0]\n:SERIN_NOTRACK_IN - [0:0]\n"),
            "{text}"
        );
        assert!(
            text.contains("iptables-nft -t raw -A OUTPUT ! -o lo -p tcp -j SERIN_NOTRACK_OUT\n")
        );
        assert!(
            text.contains("iptables-nft -t raw -A PREROUTING ! -i lo -p tcp -j SERIN_NOTRACK_IN\n")
        );
    }

    /// An iptables whose kernel has no `socket` match: every call is logged, `-C` and `-D`
    /// find nothing, a restore input using `-m socket` is refused as iptables refuses it.
    fn iptables_without_the_socket_match(dir: &std::path::Path) -> Iptables {
        std::fs::create_dir_all(dir).expect("temp dir");
        let log = dir.join("log");
        let script = |name: &str, body: &str| {
            write_executable(
                &dir.join(name),
                &format!("#!/bin/sh\nLOG='{}'\n{body}", log.display()),
            );
        };
        script(
            "iptables-restore",
            "in=$(cat)\nprintf 'restore\\n%s\\n' \"$in\" >> \"$LOG\"\ncase \"$in\" in *'-m socket'*) echo \"iptables-restore v1.8.9 (nf_tables): Couldn't load match \\`socket':No such file or directory\" >&2; exit 2;; esac\n",
        );
        script(
            "iptables",
            "echo \"$*\" >> \"$LOG\"\ncase \"$*\" in *' -C '*|*' -D '*) exit 1;; esac\n",
        );
        Iptables {
            bin: dir.join("iptables").display().to_string(),
        }
    }

    #[test]
    fn a_kernel_refusing_the_socket_match_gets_the_capture_and_the_loopback_exemption_only() {
        let dir = std::env::temp_dir().join(format!("serin-capture-fake-{}", std::process::id()));
        let ipt = iptables_without_the_socket_match(&dir);
        let installed = ipt.install(&cfg().plan()).expect("capture installed");
        let log = std::fs::read_to_string(dir.join("log")).expect("log");
        let _ = std::fs::remove_dir_all(&dir);
        let refusal = installed
            .skipped(Exemption::Upstream)
            .expect("the upstream exemption is reported as skipped");
        assert!(refusal.to_string().contains("socket"), "{refusal}");
        assert!(installed.skipped(Exemption::Loopback).is_none());
        assert!(log.contains("-t nat -A OUTPUT"), "{log}");
        assert!(
            log.contains("-t raw -A OUTPUT -o lo -j SERIN_NOTRACK\n"),
            "{log}"
        );
        // Neither half of the upstream exemption is jumped to, and its chains were emptied.
        assert!(!log.contains("-A OUTPUT ! -o lo"), "{log}");
        assert!(!log.contains("-A PREROUTING ! -i lo"), "{log}");
        assert!(
            log.ends_with(
                "restore\n*raw\n:SERIN_NOTRACK_OUT - [0:0]\n:SERIN_NOTRACK_IN - [0:0]\nCOMMIT\n"
            ),
            "{log}"
        );
    }

    /// Writes a fake tool into `dir` (beside [`iptables_without_the_socket_match`]'s), logging
    /// to the same `log`.
    fn fake_tool(dir: &std::path::Path, name: &str, body: &str) {
        let log = dir.join("log");
        write_executable(
            &dir.join(name),
            &format!("#!/bin/sh\nLOG='{}'\n{body}", log.display()),
        );
    }

    /// Both families' plans, without the upstream exemption (the fakes refuse its match).
    fn both_families() -> [Plan; 2] {
        let c = CaptureConfig {
            track_upstream: true,
            ..cfg()
        };
        [c.plan_for(Family::V4), c.plan_for(Family::V6)]
    }

    #[test]
    fn removal_skips_a_family_without_its_tool_and_stops_at_the_first_failure() {
        let dir = std::env::temp_dir().join(format!("serin-capture-rm-{}", std::process::id()));
        let ipt = iptables_without_the_socket_match(&dir);
        // An empty nat table: nothing of Serin's is there, so the removal only deletes jumps.
        fake_tool(&dir, "iptables-save", "echo \"save $*\" >> \"$LOG\"\n");
        // No ip6tables here: nothing can have been installed with it.
        let Removals {
            done: removed,
            failed,
        } = ipt.remove_all(&both_families());
        assert!(failed.is_none(), "{failed:?}");
        assert_eq!(
            removed,
            vec![
                (Family::V4, Removal::Removed),
                (Family::V6, Removal::NoTool)
            ]
        );
        // A refused IPv4 removal stops there: IPv6 is not touched, and the error says why.
        fake_tool(
            &dir,
            "iptables-save",
            "echo 'iptables-save v1.8.9 (nf_tables): Permission denied (you must be root)' >&2\nexit 4\n",
        );
        fake_tool(&dir, "ip6tables", "echo \"ip6 $*\" >> \"$LOG\"\n");
        let Removals {
            done: removed,
            failed,
        } = ipt.remove_all(&both_families());
        let log = std::fs::read_to_string(dir.join("log")).expect("log");
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(removed, vec![]);
        let (family, e) = failed.expect("the IPv4 removal fails");
        assert_eq!(family, Family::V4);
        assert!(e.to_string().contains("Permission denied"), "{e}");
        assert!(!log.contains("ip6 "), "{log}");
    }

    #[test]
    fn when_the_ipv6_rules_fail_the_ipv4_rules_go_again() {
        let dir = std::env::temp_dir().join(format!("serin-capture-v6-{}", std::process::id()));
        let ipt = iptables_without_the_socket_match(&dir);
        // ip6tables runs, but its restore refuses the nat table.
        let log = dir.join("log");
        for (name, body) in [
            ("ip6tables", "echo \"ip6 $*\" >> \"$LOG\"\nexit 1\n"),
            (
                "ip6tables-restore",
                "cat >/dev/null\necho \"can't initialize ip6tables table \\`nat'\" >&2\nexit 1\n",
            ),
        ] {
            fake_tool(&dir, name, body);
        }
        let (family, e) = ipt.install_all(&both_families()).unwrap_err();
        let log = std::fs::read_to_string(&log).expect("log");
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(family, Family::V6);
        assert!(e.to_string().contains("can't initialize ip6tables"), "{e}");
        // The IPv4 jumps were added, then deleted again; ip6tables was asked for its restore
        // and then only to delete (what a failed restore left: nothing).
        let added = log
            .find("-t nat -A OUTPUT")
            .expect("the IPv4 jump was added");
        let deleted = log.find("-t nat -D OUTPUT").expect("and deleted again");
        assert!(added < deleted, "{log}");
        assert!(!log.contains("ip6 -t nat -A"), "{log}");
        assert!(!log.contains("ip6 -t raw -A"), "{log}");
    }

    #[test]
    fn when_an_ipv6_jump_fails_after_its_restore_the_ipv6_half_goes_too() {
        let dir =
            std::env::temp_dir().join(format!("serin-capture-v6-half-{}", std::process::id()));
        let ipt = iptables_without_the_socket_match(&dir);
        // ip6tables' restore succeeds and its PREROUTING jump goes in, but its OUTPUT jump is
        // refused: half of IPv6 is captured when install_all gives up.
        let log = dir.join("log");
        for (name, body) in [
            (
                "ip6tables",
                "echo \"ip6 $*\" >> \"$LOG\"\ncase \"$*\" in *' -C '*|*' -D '*) exit 1;; *'-A OUTPUT'*) echo 'ip6tables: No chain/target/match by that name.' >&2; exit 1;; esac\n",
            ),
            (
                "ip6tables-restore",
                "cat >/dev/null\necho ip6-restore >> \"$LOG\"\n",
            ),
        ] {
            fake_tool(&dir, name, body);
        }
        let (family, _) = ipt.install_all(&both_families()).unwrap_err();
        let log = std::fs::read_to_string(&log).expect("log");
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(family, Family::V6);
        // The IPv6 PREROUTING jump that went in is deleted again, as the IPv4 ones are.
        let added = log
            .find("ip6 -t nat -A PREROUTING")
            .expect("the IPv6 inbound jump was added");
        let deleted = log
            .find("ip6 -t nat -D PREROUTING")
            .unwrap_or_else(|| panic!("the half-installed IPv6 jump stays: {log}"));
        assert!(added < deleted, "{log}");
        assert!(log.contains("\n-t nat -D OUTPUT"), "{log}");
    }

    #[test]
    fn an_iptables_that_never_deletes_fails_init_instead_of_hanging_it() {
        let dir = std::env::temp_dir().join(format!("serin-capture-stuck-{}", std::process::id()));
        let ipt = iptables_without_the_socket_match(&dir);
        // Every call succeeds, -D included, and nothing is ever deleted.
        write_executable(&dir.join("iptables"), "#!/bin/sh\nexit 0\n");
        let err = ipt.remove(&cfg().plan()).unwrap_err().to_string();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(err.contains("still there after 64 deletions"), "{err}");
        assert!(err.contains("-D"), "{err}");
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
    }

    #[test]
    fn a_backend_whose_save_fails_is_not_chosen_unless_only_privileges_are_missing() {
        // A node where only iptables-legacy works (a kernel without nf_tables): the pod's
        // fresh namespace holds no rule in either, and nft used to win that tie, so the
        // install then failed. A save failing for lack of privileges still counts: the
        // install names the missing capability.
        let nft = save_outcome(
            false,
            "",
            "iptables-nft-save v1.8.9 (nf_tables): Failed to initialize nft: Protocol not supported",
        );
        assert_eq!(nft, None);
        assert_eq!(choose_mode(nft.as_deref(), Some("")), Some(Mode::Legacy));
        let unprivileged = save_outcome(
            false,
            "",
            "Could not fetch rule set generation id: Permission denied (you must be root)",
        );
        assert_eq!(unprivileged.as_deref(), Some(""));
        assert_eq!(
            choose_mode(unprivileged.as_deref(), Some("")),
            Some(Mode::Nft)
        );
        let rules = "*nat\n-A PREROUTING -j KUBE-SERVICES\nCOMMIT\n";
        assert_eq!(save_outcome(true, rules, "").as_deref(), Some(rules));
        assert_eq!(joined(vec![]), None);
        assert_eq!(joined(vec![String::new()]).as_deref(), Some(""));
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
