//! A network of its own for the process backend: one Linux network namespace per member,
//! joined by veth pairs to a bridge in the root namespace.
//!
//! On loopback every member shares one network stack, so nothing can stand between two of them:
//! a partition cannot be made. Here each member has its own stack and its own address, so a
//! firewall rule inside *one member's* namespace cuts exactly the links we want, while the
//! harness (in the root namespace, on the bridge's address) still reaches every member: a
//! partition separates members from each other, not from their clients, as on docker.
//!
//! # Layout
//!
//! A run claims an index X (1..=254) and owns every name that starts with `kvsnt<X>`:
//!
//! | what | name | address |
//! | --- | --- | --- |
//! | bridge (root namespace) | `kvsnt<X>b` | `10.213.X.1/24`, how the harness reaches members |
//! | kv-N's namespace | `kvsnt<X>n<N>` | — |
//! | kv-N's veth, bridge side | `kvsnt<X>h<N>` | — |
//! | kv-N's veth, member side (in its namespace) | `kvsnt<X>p<N>` | `10.213.X.(10+N)/24` |
//!
//! 10.213.0.0/16 is the range the project's tests use for their own hosts; nothing outside this
//! machine is ever addressed. The claim is the bridge's creation (`ip link add` fails when the
//! name exists), so parallel runs never share an index. The bridge's alias records the owner's
//! pid: a later run removes, at its start, everything of an index whose owner is dead (a run
//! that crashed or was killed before its teardown), matching names by the `kvsnt` prefix only.
//!
//! When the kernel passes bridged frames through iptables (`br_netfilter`, as Docker sets it
//! up, usually with a FORWARD policy of DROP), member-to-member traffic would be dropped in the
//! root namespace: one `FORWARD -i kvsnt<X>b -o kvsnt<X>b -j ACCEPT` rule lets it through, and is
//! removed with the rest.
//!
//! # Faults
//!
//! A cut is a set of `DROP` rules inside the namespaces of one side: `OUTPUT -d <peer>` (and,
//! for a two-way cut, `INPUT -s <peer>`). Healing flushes those chains; the namespaces belong to
//! the run, so nothing else lives there. Latency is `tc qdisc … netem delay` on the member's
//! veth, when the kernel has `sch_netem` (probed once at setup; without it latency is reported
//! unsupported rather than failing the run).
//!
//! Every step is a command line, built by [`NetLayout`] (pure, unit-tested) and run by [`Netns`],
//! which removes the whole network on [`Netns::teardown`] and on drop.

use std::fmt;
use std::fs;
use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::Mutex;

use super::{run_command, BackendError};

/// Every name this module creates starts with this.
pub const PREFIX: &str = "kvsnt";

/// The first two octets of every address.
const NET: [u8; 2] = [10, 213];

/// The host part of kv-0's address (kv-N gets `FIRST_HOST + N`).
const FIRST_HOST: u8 = 10;

/// The most members a layout has room for (addresses up to .254).
pub const MAX_MEMBERS: usize = (254 - FIRST_HOST as usize) + 1;

/// A command line.
pub type Cmd = Vec<String>;

fn cmd(parts: &[&str]) -> Cmd {
    parts.iter().map(|s| s.to_string()).collect()
}

/// The names and addresses of one run's network (see the module docs); builds the commands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetLayout {
    /// The claimed index X.
    pub index: u8,
    /// Number of members.
    pub members: usize,
}

/// Which links a partition cuts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkCut {
    /// Every packet between `side` and the other members is dropped, both ways.
    Split {
        /// The members on one side (the others are on the other side).
        side: Vec<usize>,
    },
    /// Only packets *from* `member` to the other members are dropped; theirs still arrive.
    OneWay {
        /// The member whose outbound traffic is lost.
        member: usize,
    },
}

impl LinkCut {
    /// The namespaces the rules go into.
    pub fn side(&self) -> Vec<usize> {
        match self {
            LinkCut::Split { side } => side.clone(),
            LinkCut::OneWay { member } => vec![*member],
        }
    }
}

impl NetLayout {
    /// The bridge in the root namespace.
    pub fn bridge(&self) -> String {
        format!("{PREFIX}{}b", self.index)
    }

    /// Namespace names are this plus the ordinal (the launcher's `--netns-prefix`).
    pub fn namespace_prefix(&self) -> String {
        format!("{PREFIX}{}n", self.index)
    }

    /// kv-`member`'s namespace.
    pub fn namespace(&self, member: usize) -> String {
        format!("{}{member}", self.namespace_prefix())
    }

    fn host_veth(&self, member: usize) -> String {
        format!("{PREFIX}{}h{member}", self.index)
    }

    /// kv-`member`'s interface inside its namespace.
    pub fn member_veth(&self, member: usize) -> String {
        format!("{PREFIX}{}p{member}", self.index)
    }

    /// The bridge's address: where the harness's traffic to the members comes from.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::new(NET[0], NET[1], self.index, 1)
    }

    /// kv-`member`'s address.
    pub fn member_ip(&self, member: usize) -> Ipv4Addr {
        Ipv4Addr::new(NET[0], NET[1], self.index, FIRST_HOST + member as u8)
    }

    /// `10.213.X.0/24`.
    pub fn subnet(&self) -> String {
        format!("{}.{}.{}.0/24", NET[0], NET[1], self.index)
    }

    /// The bridge's alias, naming the run that owns the index.
    pub fn owner_alias(owner: u32) -> String {
        format!("kvset-chaos pid {owner}")
    }

    /// Creates the bridge: the claim (fails if another run holds the index).
    pub fn claim(&self) -> Cmd {
        cmd(&[
            "ip",
            "link",
            "add",
            "name",
            &self.bridge(),
            "type",
            "bridge",
        ])
    }

    /// After the claim: owner, bridge address, and one namespace and veth pair per member.
    pub fn setup(&self, owner: u32) -> Vec<Cmd> {
        let br = self.bridge();
        let mut c = vec![
            cmd(&[
                "ip",
                "link",
                "set",
                "dev",
                &br,
                "alias",
                &Self::owner_alias(owner),
            ]),
            cmd(&[
                "ip",
                "addr",
                "add",
                &format!("{}/24", self.gateway()),
                "dev",
                &br,
            ]),
            cmd(&["ip", "link", "set", "dev", &br, "up"]),
        ];
        for m in 0..self.members {
            let (ns, host, peer) = (self.namespace(m), self.host_veth(m), self.member_veth(m));
            c.push(cmd(&["ip", "netns", "add", &ns]));
            c.push(cmd(&[
                "ip", "link", "add", "name", &host, "type", "veth", "peer", "name", &peer, "netns",
                &ns,
            ]));
            c.push(cmd(&["ip", "link", "set", "dev", &host, "master", &br]));
            c.push(cmd(&["ip", "link", "set", "dev", &host, "up"]));
            c.push(cmd(&["ip", "-n", &ns, "link", "set", "dev", "lo", "up"]));
            c.push(cmd(&[
                "ip",
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/24", self.member_ip(m)),
                "dev",
                &peer,
            ]));
            c.push(cmd(&["ip", "-n", &ns, "link", "set", "dev", &peer, "up"]));
        }
        c
    }

    /// The root namespace's rule letting bridged member-to-member traffic through FORWARD.
    pub fn forward_rule(&self, action: &str) -> Cmd {
        let br = self.bridge();
        cmd(&[
            "iptables", action, "FORWARD", "-i", &br, "-o", &br, "-j", "ACCEPT",
        ])
    }

    /// Removes everything: the namespaces (their veths go with them) and the bridge. Each may
    /// fail harmlessly when already gone.
    pub fn teardown(&self) -> Vec<Cmd> {
        let mut c: Vec<Cmd> = (0..self.members)
            .map(|m| cmd(&["ip", "netns", "delete", &self.namespace(m)]))
            .collect();
        c.push(cmd(&["ip", "link", "delete", "dev", &self.bridge()]));
        c
    }

    fn in_ns(&self, member: usize, rest: &[&str]) -> Cmd {
        let mut c = cmd(&["ip", "netns", "exec", &self.namespace(member)]);
        c.extend(rest.iter().map(|s| s.to_string()));
        c
    }

    /// The rules that make `cut`.
    pub fn cut(&self, cut: &LinkCut) -> Vec<Cmd> {
        let side = cut.side();
        let others: Vec<usize> = (0..self.members).filter(|m| !side.contains(m)).collect();
        let mut c = Vec::new();
        for &a in &side {
            for &b in &others {
                let peer = self.member_ip(b).to_string();
                c.push(self.in_ns(a, &["iptables", "-A", "OUTPUT", "-d", &peer, "-j", "DROP"]));
                if matches!(cut, LinkCut::Split { .. }) {
                    c.push(self.in_ns(a, &["iptables", "-A", "INPUT", "-s", &peer, "-j", "DROP"]));
                }
            }
        }
        c
    }

    /// Removes every rule a cut put into `member`'s namespace.
    pub fn heal(&self, member: usize) -> Vec<Cmd> {
        vec![
            self.in_ns(member, &["iptables", "-F", "OUTPUT"]),
            self.in_ns(member, &["iptables", "-F", "INPUT"]),
        ]
    }

    /// Delays every packet `member` sends by `ms`.
    pub fn delay(&self, member: usize, ms: u64) -> Vec<Cmd> {
        let dev = self.member_veth(member);
        vec![self.in_ns(
            member,
            &[
                "tc",
                "qdisc",
                "add",
                "dev",
                &dev,
                "root",
                "netem",
                "delay",
                &format!("{ms}ms"),
            ],
        )]
    }

    /// Removes the delay.
    pub fn undelay(&self, member: usize) -> Vec<Cmd> {
        let dev = self.member_veth(member);
        vec![self.in_ns(member, &["tc", "qdisc", "del", "dev", &dev, "root"])]
    }

    /// Probes for `sch_netem` on the bridge (added, then removed).
    pub fn netem_probe(&self) -> Vec<Cmd> {
        let br = self.bridge();
        vec![
            cmd(&[
                "tc", "qdisc", "add", "dev", &br, "root", "netem", "delay", "1ms",
            ]),
            cmd(&["tc", "qdisc", "del", "dev", &br, "root"]),
        ]
    }
}

/// The index a stale name belongs to: `kvsnt<X>…` → X.
pub fn index_of(name: &str) -> Option<u8> {
    let rest = name.strip_prefix(PREFIX)?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let tail = &rest[digits.len()..];
    if digits.is_empty() || !matches!(tail.chars().next(), Some('b' | 'n' | 'h' | 'p')) {
        return None;
    }
    digits.parse().ok()
}

/// The owner's pid in a bridge alias written by [`NetLayout::setup`].
pub fn owner_of(alias: &str) -> Option<u32> {
    alias
        .trim()
        .strip_prefix("kvset-chaos pid ")
        .and_then(|p| p.parse().ok())
}

/// A member network that exists: created by [`Netns::create`], removed by
/// [`Netns::teardown`] or on drop.
pub struct Netns {
    layout: NetLayout,
    /// The FORWARD rule was added (bridged traffic goes through iptables).
    forward_rule: bool,
    /// `sch_netem` is available.
    netem: bool,
    /// Removed already.
    gone: Mutex<bool>,
}

impl fmt::Debug for Netns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Netns")
            .field("layout", &self.layout)
            .field("netem", &self.netem)
            .finish()
    }
}

/// Why namespaces cannot be used here, if they cannot (checked before trying).
pub fn unavailable_reason() -> Option<String> {
    if !super::is_root() {
        return Some("network namespaces need root".into());
    }
    if !cfg!(target_os = "linux") {
        return Some("network namespaces are a Linux feature".into());
    }
    if let Err(e) = run_command(&cmd(&["ip", "netns", "list"]), &[]) {
        return Some(format!("`ip netns` does not work here: {e}"));
    }
    None
}

impl Netns {
    /// Removes what crashed earlier runs left, claims a free index, and builds the network for
    /// `members` members. On failure nothing of it is left behind.
    pub fn create(members: usize) -> Result<Netns, BackendError> {
        if members == 0 || members > MAX_MEMBERS {
            return Err(BackendError::Setup(format!(
                "a member network has room for 1 to {MAX_MEMBERS} members, not {members}"
            )));
        }
        if let Some(why) = unavailable_reason() {
            return Err(BackendError::Setup(why));
        }
        remove_stale();
        let owner = std::process::id();
        let start = (owner as usize) % 254;
        let mut last = None;
        for i in 0..254 {
            let index = (1 + (start + i) % 254) as u8;
            let layout = NetLayout { index, members };
            if Path::new("/sys/class/net").join(layout.bridge()).exists() || subnet_in_use(&layout)
            {
                continue;
            }
            match run_command(&layout.claim(), &[]) {
                Ok(_) => return Netns::build(layout, owner),
                // Taken between the check and the claim: try the next.
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            BackendError::Setup("no free 10.213.X.0/24 for a member network".into())
        }))
    }

    fn build(layout: NetLayout, owner: u32) -> Result<Netns, BackendError> {
        let mut net = Netns {
            layout,
            forward_rule: false,
            netem: false,
            gone: Mutex::new(false),
        };
        // From here on, a failure drops `net`, which removes what was made.
        for c in net.layout.setup(owner) {
            run_command(&c, &[])?;
        }
        let bridged_through_iptables =
            fs::read_to_string("/proc/sys/net/bridge/bridge-nf-call-iptables")
                .is_ok_and(|v| v.trim() == "1");
        if bridged_through_iptables {
            run_command(&net.layout.forward_rule("-I"), &[])?;
            net.forward_rule = true;
        }
        let probe = net.layout.netem_probe();
        net.netem = run_command(&probe[0], &[]).is_ok();
        if net.netem {
            let _ = run_command(&probe[1], &[]);
        }
        tracing::info!(bridge = %net.layout.bridge(), subnet = %net.layout.subnet(), netem = net.netem, "member network up");
        Ok(net)
    }

    /// The names and addresses.
    pub fn layout(&self) -> &NetLayout {
        &self.layout
    }

    /// True when latency can be added (`sch_netem`).
    pub fn has_netem(&self) -> bool {
        self.netem
    }

    /// One line for the report.
    pub fn describe(&self) -> String {
        format!(
            "network namespaces {}0..{} on bridge {} ({}, harness at {}); latency: {}",
            self.layout.namespace_prefix(),
            self.layout.members.saturating_sub(1),
            self.layout.bridge(),
            self.layout.subnet(),
            self.layout.gateway(),
            if self.netem {
                "tc netem"
            } else {
                "unsupported (no sch_netem)"
            }
        )
    }

    /// Runs commands in order, stopping at the first failure.
    pub fn run(&self, cmds: &[Cmd]) -> Result<(), BackendError> {
        cmds.iter()
            .try_for_each(|c| run_command(c, &[]).map(|_| ()))
    }

    /// Runs every command, ignoring failures (for healing and teardown).
    pub fn run_all(&self, cmds: &[Cmd]) {
        for c in cmds {
            let _ = run_command(c, &[]);
        }
    }

    /// Removes the network (namespaces, veths, bridge, FORWARD rule). Idempotent. The members
    /// must be stopped first (a process keeps its namespace alive, though not its name).
    pub fn teardown(&self) {
        let mut gone = self.gone.lock().unwrap_or_else(|p| p.into_inner());
        if *gone {
            return;
        }
        *gone = true;
        if self.forward_rule {
            let _ = run_command(&self.layout.forward_rule("-D"), &[]);
        }
        self.run_all(&self.layout.teardown());
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// True when some route already covers the layout's subnet (a real network of this machine).
fn subnet_in_use(layout: &NetLayout) -> bool {
    let probe = cmd(&[
        "ip",
        "-4",
        "route",
        "show",
        "to",
        "match",
        &layout.gateway().to_string(),
    ]);
    run_command(&probe, &[]).is_ok_and(|out| {
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|l| !l.starts_with("default"))
    })
}

fn pid_alive(pid: u32) -> bool {
    Path::new("/proc").join(pid.to_string()).exists()
}

/// Removes the networks of runs that are gone: bridges `kvsnt<X>b` whose owner is dead, with
/// their namespaces and FORWARD rules, and namespaces `kvsnt<X>n…` without a bridge.
pub fn remove_stale() {
    let bridges: Vec<String> = fs::read_dir("/sys/class/net")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(PREFIX) && n.ends_with('b'))
                .collect()
        })
        .unwrap_or_default();
    let mut live: Vec<u8> = Vec::new();
    let mut dead: Vec<u8> = Vec::new();
    for br in &bridges {
        let Some(index) = index_of(br) else { continue };
        let alias = fs::read_to_string(Path::new("/sys/class/net").join(br).join("ifalias"))
            .unwrap_or_default();
        match owner_of(&alias) {
            Some(pid) if !pid_alive(pid) => dead.push(index),
            // Alive, or being set up right now (no alias yet): not ours to touch.
            _ => live.push(index),
        }
    }
    let namespaces: Vec<String> = fs::read_dir("/run/netns")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(PREFIX))
                .collect()
        })
        .unwrap_or_default();
    for ns in namespaces {
        if index_of(&ns).is_some_and(|i| !live.contains(&i)) {
            tracing::warn!(namespace = %ns, "removing a member namespace left by an earlier run");
            let _ = run_command(&cmd(&["ip", "netns", "delete", &ns]), &[]);
        }
    }
    if dead.is_empty() {
        return;
    }
    let forward = run_command(&cmd(&["iptables", "-S", "FORWARD"]), &[])
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    for index in dead {
        let layout = NetLayout { index, members: 0 };
        tracing::warn!(bridge = %layout.bridge(), "removing a member network left by an earlier run");
        let needle = format!("-i {} ", layout.bridge());
        for rule in forward.lines().filter(|l| l.contains(&needle)) {
            if let Some(spec) = rule.strip_prefix("-A ") {
                let mut c = cmd(&["iptables", "-D"]);
                c.extend(spec.split_whitespace().map(str::to_string));
                let _ = run_command(&c, &[]);
            }
        }
        let _ = run_command(
            &cmd(&["ip", "link", "delete", "dev", &layout.bridge()]),
            &[],
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(cmds: &[Cmd]) -> Vec<String> {
        cmds.iter().map(|c| c.join(" ")).collect()
    }

    #[test]
    fn names_and_addresses_follow_the_index() {
        let l = NetLayout {
            index: 7,
            members: 3,
        };
        assert_eq!(l.bridge(), "kvsnt7b");
        assert_eq!(l.namespace(2), "kvsnt7n2");
        assert_eq!(l.member_veth(1), "kvsnt7p1");
        assert_eq!(l.gateway().to_string(), "10.213.7.1");
        assert_eq!(l.member_ip(2).to_string(), "10.213.7.12");
        assert_eq!(l.subnet(), "10.213.7.0/24");
        // Interface names fit Linux's 15 characters at the largest index and ordinal.
        let big = NetLayout {
            index: 254,
            members: MAX_MEMBERS,
        };
        assert!(big.host_veth(MAX_MEMBERS - 1).len() <= 15);
        assert_eq!(big.member_ip(MAX_MEMBERS - 1).to_string(), "10.213.254.254");
        for name in [l.bridge(), l.namespace(2), l.host_veth(0), l.member_veth(0)] {
            assert_eq!(index_of(&name), Some(7), "{name}");
        }
        assert_eq!(index_of("kvsntx"), None);
        assert_eq!(index_of("kvsnt7"), None);
        assert_eq!(index_of("eth0"), None);
        assert_eq!(owner_of(&NetLayout::owner_alias(4242)), Some(4242));
        assert_eq!(owner_of("something else"), None);
    }

    #[test]
    fn setup_claims_then_builds_one_namespace_per_member_and_teardown_removes_them() {
        let l = NetLayout {
            index: 7,
            members: 2,
        };
        assert_eq!(l.claim().join(" "), "ip link add name kvsnt7b type bridge");
        let setup = lines(&l.setup(99));
        assert_eq!(
            setup[..3],
            [
                "ip link set dev kvsnt7b alias kvset-chaos pid 99",
                "ip addr add 10.213.7.1/24 dev kvsnt7b",
                "ip link set dev kvsnt7b up",
            ]
        );
        assert!(setup.contains(&"ip netns add kvsnt7n1".to_string()));
        assert!(setup.contains(
            &"ip link add name kvsnt7h1 type veth peer name kvsnt7p1 netns kvsnt7n1".to_string()
        ));
        assert!(setup.contains(&"ip link set dev kvsnt7h1 master kvsnt7b".to_string()));
        assert!(setup.contains(&"ip -n kvsnt7n0 addr add 10.213.7.10/24 dev kvsnt7p0".to_string()));
        assert!(setup.contains(&"ip -n kvsnt7n1 link set dev kvsnt7p1 up".to_string()));
        // A namespace exists before its veth is moved into it.
        let ns = setup.iter().position(|c| c == "ip netns add kvsnt7n1");
        let veth = setup.iter().position(|c| c.contains("peer name kvsnt7p1"));
        assert!(ns < veth);
        // Every namespace created is deleted, and the bridge last.
        let teardown = lines(&l.teardown());
        for m in 0..2 {
            assert!(teardown.contains(&format!("ip netns delete kvsnt7n{m}")));
        }
        assert_eq!(teardown.last().unwrap(), "ip link delete dev kvsnt7b");
        assert_eq!(
            l.forward_rule("-D").join(" "),
            "iptables -D FORWARD -i kvsnt7b -o kvsnt7b -j ACCEPT"
        );
    }

    #[test]
    fn cuts_drop_only_the_links_they_name() {
        let l = NetLayout {
            index: 3,
            members: 3,
        };
        // Isolating kv-1: both directions to kv-0 and kv-2, in kv-1's namespace only.
        let isolate = lines(&l.cut(&LinkCut::Split { side: vec![1] }));
        assert_eq!(
            isolate,
            [
                "ip netns exec kvsnt3n1 iptables -A OUTPUT -d 10.213.3.10 -j DROP",
                "ip netns exec kvsnt3n1 iptables -A INPUT -s 10.213.3.10 -j DROP",
                "ip netns exec kvsnt3n1 iptables -A OUTPUT -d 10.213.3.12 -j DROP",
                "ip netns exec kvsnt3n1 iptables -A INPUT -s 10.213.3.12 -j DROP",
            ]
        );
        // The bridge's address (the harness, clients) is never dropped.
        assert!(isolate.iter().all(|c| !c.contains("10.213.3.1 ")));
        // One way: only what kv-0 sends.
        let one_way = lines(&l.cut(&LinkCut::OneWay { member: 0 }));
        assert_eq!(
            one_way,
            [
                "ip netns exec kvsnt3n0 iptables -A OUTPUT -d 10.213.3.11 -j DROP",
                "ip netns exec kvsnt3n0 iptables -A OUTPUT -d 10.213.3.12 -j DROP",
            ]
        );
        // A two-member side of five: rules only against the other three.
        let five = NetLayout {
            index: 3,
            members: 5,
        };
        let split = lines(&five.cut(&LinkCut::Split { side: vec![0, 4] }));
        assert_eq!(split.len(), 2 * 3 * 2);
        assert!(
            split
                .iter()
                .all(|c| !c.contains("10.213.3.10 ") && !c.contains("10.213.3.14 ")),
            "{split:?}"
        );
        assert_eq!(
            lines(&l.heal(1)),
            [
                "ip netns exec kvsnt3n1 iptables -F OUTPUT",
                "ip netns exec kvsnt3n1 iptables -F INPUT",
            ]
        );
        assert_eq!(
            lines(&l.delay(2, 150)),
            ["ip netns exec kvsnt3n2 tc qdisc add dev kvsnt3p2 root netem delay 150ms"]
        );
    }
}
