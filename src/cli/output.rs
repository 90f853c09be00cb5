//! How commands print: pretty JSON, aligned tables, an attachment's one-line summary.

use crate::store::Attachment;
use serde::Serialize;

pub(crate) fn print_json<T: Serialize>(v: &T) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    );
}

pub(crate) fn table(header: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let line = |cells: Vec<String>| {
        let s: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", s.join("  ").trim_end());
    };
    line(header.iter().map(|s| s.to_string()).collect());
    for r in rows {
        line(r);
    }
}

pub(crate) fn join<T: ToString>(v: &[T]) -> String {
    if v.is_empty() {
        "-".into()
    } else {
        v.iter().map(T::to_string).collect::<Vec<_>>().join(",")
    }
}

pub(super) fn port_text(a: &Attachment) -> Vec<String> {
    a.ports
        .iter()
        .map(|p| {
            let h = p
                .host_ip
                .map(|h| {
                    if h.is_ipv6() {
                        format!("[{h}]:")
                    } else {
                        format!("{h}:")
                    }
                })
                .unwrap_or_default();
            format!(
                "{h}{}->{}:{}/{}",
                p.host_port, p.container_ip, p.container_port, p.proto
            )
        })
        .collect()
}

pub(super) fn print_attachment(a: &Attachment, existed: bool, json: bool) {
    if json {
        print_json(a);
        return;
    }
    let verb = if existed {
        "already attached"
    } else {
        "attached"
    };
    println!(
        "{verb} {} to {}: {} {} mac {} (host {})",
        a.sandbox,
        a.network,
        a.ifname,
        join(&a.ips),
        a.mac,
        a.host_ifname
    );
    for p in port_text(a) {
        println!("  published {p}");
    }
}
