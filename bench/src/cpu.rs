//! CPU time of the server processes, from `/proc/<pid>/stat` (utime + stime: every thread of the
//! process, user and kernel time), and how to find those processes.
//!
//! Discovery without `--server-pids`: the processes that hold a listening TCP socket on one of
//! the endpoints' ports. `/proc/net/tcp` and `/proc/net/tcp6` map listening addresses to socket
//! inodes, `/proc/<pid>/fd/*` links to `socket:[inode]`. This finds exactly the members being
//! measured (and not, say, other kvset processes on the same machine, which `pgrep -f
//! kvset-server` would count, or `kvset-server local`'s launcher, which only supervises).

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, ToSocketAddrs};

/// Clock ticks per second of the `/proc/<pid>/stat` times.
fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

/// utime + stime, in ticks, from the text of `/proc/<pid>/stat`.
pub fn parse_stat_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) is in parentheses and may contain spaces: start after it.
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state); utime is field 14 and stime field 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// CPU seconds used so far by `pid`.
pub fn process_cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat_ticks(&stat).map(|t| t as f64 / ticks_per_second())
}

/// CPU seconds used so far by all of `pids`; None if any of them cannot be read (gone).
pub fn cpu_seconds(pids: &[u32]) -> Option<f64> {
    pids.iter().map(|p| process_cpu_seconds(*p)).sum()
}

/// CPU seconds used so far by this process.
pub fn self_cpu_seconds() -> Option<f64> {
    process_cpu_seconds(std::process::id())
}

/// The 1-minute load average.
pub fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// A local address from `/proc/net/tcp{,6}` (`0100007F:1CEB`: hex, each 32-bit word in host
/// byte order, i.e. little-endian here).
pub fn parse_proc_addr(text: &str) -> Option<(IpAddr, u16)> {
    let (ip, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let words: Vec<u32> = (0..ip.len() / 8)
        .map(|i| u32::from_str_radix(ip.get(i * 8..i * 8 + 8)?, 16).ok())
        .collect::<Option<_>>()?;
    let ip = match words.as_slice() {
        [w] => IpAddr::V4(Ipv4Addr::from(w.swap_bytes())),
        [a, b, c, d] => {
            let mut bytes = [0u8; 16];
            for (i, w) in [a, b, c, d].into_iter().enumerate() {
                bytes[i * 4..i * 4 + 4].copy_from_slice(&w.to_le_bytes());
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    Some((ip, port))
}

/// Inodes of the listening sockets in a `/proc/net/tcp{,6}` table that serve one of `wanted`
/// (an unspecified address serves every IP of its port).
pub fn listening_inodes(table: &str, wanted: &[(IpAddr, u16)]) -> HashSet<u64> {
    let mut inodes = HashSet::new();
    for line in table.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 10 || fields[3] != "0A" {
            continue; // not LISTEN
        }
        let Some((ip, port)) = parse_proc_addr(fields[1]) else {
            continue;
        };
        let serves = wanted.iter().any(|(want_ip, want_port)| {
            *want_port == port && (ip.is_unspecified() || same_ip(ip, *want_ip))
        });
        if serves {
            if let Ok(inode) = fields[9].parse::<u64>() {
                inodes.insert(inode);
            }
        }
    }
    inodes
}

fn same_ip(a: IpAddr, b: IpAddr) -> bool {
    let canonical = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    canonical(a) == canonical(b)
}

/// The processes listening on the endpoints (`host:port`, optionally `http://`), sorted.
pub fn discover_listeners(endpoints: &[String]) -> Vec<u32> {
    let wanted: Vec<(IpAddr, u16)> = endpoints
        .iter()
        .filter_map(|e| {
            let bare = e.split("://").last()?.trim_end_matches('/');
            bare.to_socket_addrs().ok()
        })
        .flatten()
        .map(|a| (a.ip(), a.port()))
        .collect();
    let mut inodes = HashSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        if let Ok(text) = std::fs::read_to_string(table) {
            inodes.extend(listening_inodes(&text, &wanted));
        }
    }
    if inodes.is_empty() {
        return Vec::new();
    }
    let me = std::process::id();
    let mut pids = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return pids;
    };
    for entry in procs.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        let holds = fds.flatten().any(|fd| {
            std::fs::read_link(fd.path())
                .ok()
                .and_then(|link| {
                    let link = link.to_str()?.to_string();
                    link.strip_prefix("socket:[")?
                        .strip_suffix(']')?
                        .parse::<u64>()
                        .ok()
                })
                .is_some_and(|inode| inodes.contains(&inode))
        });
        if holds {
            pids.push(pid);
        }
    }
    pids.sort_unstable();
    pids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_times_are_read_after_the_command_name() {
        // A command name with spaces and parentheses, as the kernel prints it.
        let stat = "4242 (kvset (srv) x) S 1 4242 4242 0 -1 4194560 1033 0 0 0 250 75 0 0 20 0 9 0 123 0 0";
        assert_eq!(parse_stat_ticks(stat), Some(325));
        assert_eq!(parse_stat_ticks("garbage"), None);
        let mine = self_cpu_seconds().expect("this process has a stat file");
        assert!(mine >= 0.0);
    }

    #[test]
    fn proc_net_addresses_decode() {
        assert_eq!(
            parse_proc_addr("0100007F:1CEB"),
            Some(("127.0.0.1".parse().unwrap(), 7403))
        );
        assert_eq!(
            parse_proc_addr("00000000000000000000000000000000:0947"),
            Some(("::".parse().unwrap(), 2375))
        );
        assert_eq!(
            parse_proc_addr("0000000000000000FFFF00000100007F:0050"),
            Some(("::ffff:127.0.0.1".parse().unwrap(), 80))
        );
    }

    #[test]
    fn only_listening_sockets_on_wanted_ports_match() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1CCB 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 111 1 0 100 0 0 10 0
   1: 0100007F:1CCC 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 222 1 0 100 0 0 10 0
   2: 0100007F:1CCB 0100007F:D2F0 01 00000000:00000000 00:00000000 00000000     0        0 333 1 0 20 4 30 10 -1
   3: 00000000:0947 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 444 1 0 100 0 0 10 0
   4: 0200007F:1CCC 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 555 1 0 100 0 0 10 0";
        let localhost: IpAddr = "127.0.0.1".parse().unwrap();
        let found = listening_inodes(table, &[(localhost, 7371), (localhost, 2375)]);
        assert_eq!(found, HashSet::from([111, 444]));
    }

    #[test]
    fn discovery_finds_a_listener_in_this_process_only_when_it_is_another_process() {
        // This process is excluded on purpose (the bench never measures itself), so a socket we
        // open is not found; an unused port finds nothing either.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        assert!(discover_listeners(&[addr]).is_empty());
    }
}
