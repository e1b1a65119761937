//! Checking fixed ports before anything starts, and naming whoever holds a taken one.

use std::net::{IpAddr, TcpListener};

/// `Some((pid, name))` of the process listening on `port`, if it can be found in `/proc`.
pub fn holder(port: u16) -> Option<(u32, String)> {
    let inodes: Vec<String> = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .flat_map(|text| {
            text.lines()
                .skip(1)
                .filter_map(|line| {
                    let cols: Vec<&str> = line.split_whitespace().collect();
                    let local_port = cols.get(1)?.rsplit(':').next()?;
                    // State 0A is LISTEN.
                    (u16::from_str_radix(local_port, 16).ok()? == port && cols.get(3)? == &"0A")
                        .then(|| cols.get(9).map(|s| s.to_string()))?
                })
                .collect::<Vec<_>>()
        })
        .collect();
    if inodes.is_empty() {
        return None;
    }
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { continue };
        for fd in fds.flatten() {
            if let Ok(target) = std::fs::read_link(fd.path()) {
                let t = target.to_string_lossy();
                if inodes.iter().any(|i| t == format!("socket:[{i}]")) {
                    let name =
                        std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default().trim().to_string();
                    return Some((pid, name));
                }
            }
        }
    }
    None
}

/// Whether `port` can be bound on `bind` right now.
pub fn is_free(bind: IpAddr, port: u16) -> bool {
    TcpListener::bind((bind, port)).is_ok()
}

/// A port that was free a moment ago, for programs that must be told their port.
pub fn pick_free(bind: IpAddr) -> std::io::Result<u16> {
    Ok(TcpListener::bind((bind, 0))?.local_addr()?.port())
}

/// The one-line error for a taken port, naming the holder when it can be found.
pub fn taken_message(port: u16, service: &str, setting: &str) -> String {
    let who = match holder(port) {
        Some((pid, name)) => format!(" (pid {pid}: {name})"),
        None => String::new(),
    };
    format!("port {port} for service '{service}' is already in use{who}; set {setting} or stop that process")
}

/// Checks every fixed port of `stack` before anything starts: one message per taken port.
pub fn check_stack(stack: &crate::orchestrator::stackfile::Stack) -> Result<(), String> {
    let mut problems = Vec::new();
    if stack.registry.port != 0 && !is_free([127, 0, 0, 1].into(), stack.registry.port) {
        problems.push(taken_message(stack.registry.port, "registry", "registry.port"));
    }
    for s in &stack.services {
        if s.port != 0 && !is_free(s.bind, s.port) {
            problems.push(taken_message(s.port, &s.name, &format!("services.{}.port", s.name)));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\nerror: "))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_listening_port_is_reported_with_this_process_as_holder() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        assert!(!super::is_free("127.0.0.1".parse().unwrap(), port));
        let (pid, _) = super::holder(port).expect("holder found");
        assert_eq!(pid, std::process::id());
        assert!(super::taken_message(port, "gateway", "services.gateway.port").contains(&format!("(pid {pid}: ")));
    }
}
