//! podman 4.3 (Debian) as a real CNI client: `network_backend = "cni"` with a knit
//! conflist, runc, busybox containers made by `podman import`. Runs podman inside the
//! test's node namespace (setns, as `nsenter --net` does).

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

struct Podman {
    dir: PathBuf,
    node: String,
    names: Vec<String>,
}

impl Podman {
    fn new(w: &World) -> Podman {
        assert!(
            Path::new("/usr/bin/podman").exists(),
            "podman is not installed (scripts/test.sh installs it)"
        );
        let dir = std::env::temp_dir().join(format!("{}-podman", w.prefix));
        let _ = std::fs::remove_dir_all(&dir);
        for d in [
            "rootfs/bin",
            "rootfs/www",
            "rootfs/etc",
            "cni-bin",
            "cni-conf",
            "storage",
            "run",
            "tmp",
        ] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        // A busybox-static image.
        busybox_rootfs(
            &dir,
            &[
                "sh", "httpd", "nc", "ping", "ip", "cat", "sleep", "echo", "tail", "nslookup",
            ],
            "hello-from-knit",
        );
        // knit as the CNI plugin, with the state dir the test's CLI uses.
        std::fs::copy(KNIT, dir.join("cni-bin/knit")).unwrap();
        let conf = format!(
            r#"[containers]
default_ulimits = ["nofile=1024:1024", "nproc=512:512"]
[network]
network_backend = "cni"
cni_plugin_dirs = ["{d}/cni-bin"]
network_config_dir = "{d}/cni-conf"
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
tmp_dir = "{d}/tmp"
"#,
            d = dir.display()
        );
        std::fs::write(dir.join("containers.conf"), conf).unwrap();
        let conflist = serde_json::json!({
            "cniVersion": "0.4.0", "name": "knitnet",
            "plugins": [{
                "type": "knit", "bridge": "cni-knit0", "isGateway": true, "ipMasq": true, "hairpinMode": true,
                "stateDir": w.state,
                "capabilities": {"portMappings": true, "ips": true, "mac": true, "aliases": true},
                "ipam": {"type": "host-local", "routes": [{"dst": "0.0.0.0/0"}],
                         "ranges": [[{"subnet": "10.89.0.0/24", "gateway": "10.89.0.1"}]]}
            }]
        });
        std::fs::write(dir.join("cni-conf/knitnet.conflist"), conflist.to_string()).unwrap();
        let p = Podman {
            dir,
            node: w.node.clone(),
            names: vec![],
        };
        let o = p.run(&[
            "import",
            p.dir.join("rootfs.tar").to_str().unwrap(),
            "localhost/knit-bb:latest",
        ]);
        assert!(
            o.status.success(),
            "podman import: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        p
    }

    fn run(&self, args: &[&str]) -> Output {
        let mut c = command_in(&self.node, "podman");
        c.env("CONTAINERS_CONF", self.dir.join("containers.conf"))
            .arg("--root")
            .arg(self.dir.join("storage"))
            .arg("--runroot")
            .arg(self.dir.join("run"))
            .args(["--storage-driver", "vfs"])
            .args(args)
            .stdin(Stdio::null());
        c.output().expect("run podman")
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "podman {args:?}: {}{}",
            String::from_utf8_lossy(&o.stderr),
            String::from_utf8_lossy(&o.stdout)
        );
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }

    fn name(&mut self, short: &str) -> String {
        let n = format!("{}-{short}", self.node.trim_end_matches("-node"));
        self.names.push(n.clone());
        n
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        for n in &self.names {
            let _ = self.run(&["rm", "-f", "-t", "0", n]);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn podman_containers_on_a_knit_network() {
    let w = World::new().with_outside();
    let mut pm = Podman::new(&w);
    let web = pm.name("web");
    let client = pm.name("client");
    pm.ok(&[
        "run",
        "-d",
        "--name",
        &web,
        "--network",
        "knitnet",
        "-p",
        "8080:80",
        "localhost/knit-bb:latest",
        "httpd",
        "-f",
        "-p",
        "80",
        "-h",
        "/www",
    ]);
    let web_ip = pm.ok(&[
        "inspect",
        &web,
        "--format",
        "{{.NetworkSettings.Networks.knitnet.IPAddress}}",
    ]);
    assert!(web_ip.starts_with("10.89.0."), "{web_ip}");
    // A published port answers from outside and from the node.
    let mut body = Err(String::new());
    for _ in 0..20 {
        body = http_get(w.outside(), &format!("{NODE_UPLINK4}:8080"), "/index.html");
        if body.as_ref().is_ok_and(|b| b.contains("hello-from-knit")) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(body.unwrap().contains("hello-from-knit"));
    // Another container: pings web, fetches it directly and through the published port
    // (hairpin via the gateway), and reaches the outside host through NAT.
    let _o = tcp_server(w.outside(), "0.0.0.0:7000", "outside");
    let script = format!(
        "ping -c1 -W2 {web_ip} >/dev/null && echo PING-OK; \
         printf 'GET /index.html HTTP/1.0\\r\\n\\r\\n' | nc {web_ip} 80 | tail -1; \
         printf 'GET /index.html HTTP/1.0\\r\\n\\r\\n' | nc 10.89.0.1 8080 | tail -1; \
         nc {OUTSIDE4} 7000 </dev/null; echo"
    );
    let out = pm.ok(&[
        "run",
        "--rm",
        "--name",
        &client,
        "--network",
        "knitnet",
        "localhost/knit-bb:latest",
        "sh",
        "-c",
        &script,
    ]);
    assert!(out.contains("PING-OK"), "{out}");
    assert_eq!(out.matches("hello-from-knit").count(), 2, "{out}");
    assert!(
        out.contains(&format!("outside saw {NODE_UPLINK4}")),
        "{out}"
    );
    // Containers resolve each other by name through knit's DNS (podman passes its names
    // as the `aliases` capability and uses the result's nameservers for resolv.conf).
    let resolv = w.state.with_extension("resolv.conf");
    std::fs::write(&resolv, "nameserver 192.0.2.1\n").unwrap();
    let mut daemon = w
        .cmd(&[
            "daemon",
            "--resolv-conf",
            resolv.to_str().unwrap(),
            "--upstream-timeout-ms",
            "200",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let asker = pm.name("asker");
    let out = pm.run(&["run", "--rm", "--name", &asker, "--network", "knitnet", "localhost/knit-bb:latest", "sh", "-c",
        &format!("cat /etc/resolv.conf; nslookup {web}; ping -c1 -W2 {web} >/dev/null && echo NAME-PING-OK")]);
    let _ = daemon.kill();
    let _ = daemon.wait();
    let _ = std::fs::remove_file(&resolv);
    let out = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.contains("nameserver 10.89.0.1"), "{out}");
    assert!(
        out.contains(&web_ip) && out.contains("NAME-PING-OK"),
        "{out}"
    );
    // knit's CLI sees podman's attachment.
    let inspect = w.json(&["network", "inspect", "knitnet"]);
    assert_eq!(
        inspect["attachments"].as_array().unwrap().len(),
        1,
        "{inspect}"
    );
    // podman rm -f leaves no links, nft elements or reservations behind.
    pm.ok(&["rm", "-f", "-t", "0", &web]);
    assert!(w.knit_links().is_empty(), "{:?}", w.knit_links());
    assert!(!w.nft_table().contains(" : 10.89.0."), "{}", w.nft_table());
    assert!(
        w.json(&["network", "inspect", "knitnet"])["attachments"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}
