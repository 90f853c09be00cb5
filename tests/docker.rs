//! knit as Docker's network driver, with a real dockerd (Debian's docker.io 20.10) run
//! inside the test's node namespace, in a private mount namespace where the test's plugin
//! directory is /run/docker/plugins; `knit daemon --docker-plugin` serves the socket.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

struct Docker {
    dir: PathBuf,
    sock: String,
    dockerd: Child,
    knitd: Child,
}

impl Docker {
    fn start(w: &World) -> Docker {
        assert!(
            Path::new("/usr/sbin/dockerd").exists(),
            "docker.io is not installed (scripts/test.sh installs it)"
        );
        let dir = std::env::temp_dir().join(format!("{}-docker", w.prefix));
        let _ = std::fs::remove_dir_all(&dir);
        for d in ["plugins", "data", "exec"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        busybox_rootfs(
            &dir,
            &["sh", "httpd", "nc", "ip", "sleep", "echo", "nslookup"],
            "hello-docker",
        );
        let plugin_sock = dir.join("plugins/knit.sock");
        let knitd = w
            .cmd(&[
                "daemon",
                "--resolv-conf",
                "/dev/null",
                "--docker-plugin",
                "--docker-plugin-socket",
                plugin_sock.to_str().unwrap(),
                "--docker-host",
                &format!("{}/docker.sock", dir.display()),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        eventually_within(
            "knit's plugin socket",
            std::time::Duration::from_secs(60),
            || plugin_sock.exists(),
        );
        // Only root may talk to the root daemon's plugin API.
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&plugin_sock)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
        // Docker finds plugins in /run/docker/plugins: in dockerd's own mount namespace
        // that is the test's directory, so the host's /run/docker stays as it was.
        std::fs::create_dir_all("/run/docker").unwrap();
        let sock = format!("{}/docker.sock", dir.display());
        let script = format!(
            "mount -t tmpfs none /run/docker && mkdir /run/docker/plugins && \
             mount --bind {d}/plugins /run/docker/plugins && \
             exec nsenter --net=/run/netns/{node} dockerd --data-root {d}/data --exec-root {d}/exec \
             -H unix://{sock} --pidfile {d}/docker.pid --bridge none --iptables=false \
             --ip-masq=false --ip6tables=false --storage-driver vfs \
             --exec-opt native.cgroupdriver=cgroupfs",
            d = dir.display(),
            node = w.node,
        );
        let dockerd = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("dockerd.log")).unwrap())
            .spawn()
            .unwrap();
        let d = Docker {
            dir,
            sock,
            dockerd,
            knitd,
        };
        eventually_within(
            "dockerd answering",
            std::time::Duration::from_secs(60),
            || d.run(&["version"]).status.success(),
        );
        d.ok(&["import", d.dir.join("rootfs.tar").to_str().unwrap(), "bb:1"]);
        d
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new("docker")
            .arg("-H")
            .arg(format!("unix://{}", self.sock))
            .args(args)
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "docker {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }

    fn fail(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(!o.status.success(), "docker {args:?} should have failed");
        String::from_utf8_lossy(&o.stderr).into_owned()
    }

    fn ip(&self, container: &str, network: &str) -> String {
        self.ok(&[
            "inspect",
            "-f",
            &format!("{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}"),
            container,
        ])
    }

    /// An HTTP GET from inside `container` (busybox nc), retried for a few seconds while
    /// the server in a just-started container comes up.
    fn http_from(&self, container: &str, ip: &str) -> String {
        let get = format!("echo -e 'GET / HTTP/1.0\\r\\n\\r\\n' | nc {ip} 80");
        let mut last = String::new();
        for _ in 0..50 {
            let o = self.run(&["exec", container, "sh", "-c", &get]);
            last = String::from_utf8_lossy(&o.stdout).into_owned();
            if last.contains("200 OK") {
                break;
            }
            last.push_str(&String::from_utf8_lossy(&o.stderr));
            std::thread::sleep(Duration::from_millis(100));
        }
        last
    }
}

impl Drop for Docker {
    fn drop(&mut self) {
        let _ = self.run(&["rm", "-f", "web1", "c2", "c4"]);
        if let Ok(pid) = std::fs::read_to_string(self.dir.join("docker.pid")) {
            let _ = Command::new("kill").arg(pid.trim()).status();
        }
        for _ in 0..100 {
            if self.dockerd.try_wait().ok().flatten().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.dockerd.kill();
        let _ = self.dockerd.wait();
        // Container shims outlive a killed dockerd: found by their containerd's socket.
        let shims = format!("{}/exec/containerd", self.dir.display());
        let _ = Command::new("pkill").args(["-9", "-f", &shims]).status();
        let _ = self.knitd.kill();
        let _ = self.knitd.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn docker_networks_on_knit() {
    let w = World::new().with_outside();
    let d = Docker::start(&w);
    d.ok(&[
        "network",
        "create",
        "-d",
        "knit",
        "--subnet",
        "10.93.0.0/24",
        "-o",
        "knit.name=web",
        "web",
    ]);
    let v = w.json(&["network", "inspect", "web"]);
    assert_eq!(v["network"]["origin"], "docker");

    d.ok(&[
        "run",
        "-d",
        "--network",
        "web",
        "--name",
        "web1",
        "--network-alias",
        "www",
        "-p",
        "8080:80",
        "bb:1",
        "httpd",
        "-f",
        "-p",
        "80",
        "-h",
        "/www",
    ]);
    d.ok(&[
        "run",
        "-d",
        "--network",
        "web",
        "--name",
        "c2",
        "bb:1",
        "sleep",
        "1000",
    ]);
    let ip1 = d.ip("web1", "web");
    assert!(ip1.starts_with("10.93.0."), "{ip1}");
    // The interface Docker moved in is knit's veth, with the MAC knit chose.
    let v = w.json(&["network", "inspect", "web"]);
    let atts = v["attachments"].as_array().unwrap();
    assert_eq!(atts.len(), 2);
    let mac1 = atts
        .iter()
        .find(|a| a["ips"][0].as_str().unwrap().starts_with(&ip1))
        .unwrap()["mac"]
        .as_str()
        .unwrap()
        .to_string();
    let shown = d.ok(&["exec", "web1", "ip", "link", "show", "eth0"]);
    assert!(shown.contains(&mac1), "{shown} / {mac1}");

    // Container to container, by address and by name (Docker's embedded DNS).
    assert!(d.http_from("c2", &ip1).contains("hello-docker"));
    let ns = d.ok(&["exec", "c2", "nslookup", "web1"]);
    assert!(ns.contains(&ip1), "{ns}");
    // knit's DNS on the gateway knows the containers by name and alias too (the daemon
    // asks dockerd which container each endpoint is).
    for name in ["web1", "www"] {
        let mut last = String::new();
        for _ in 0..50 {
            let o = d.run(&["exec", "c2", "nslookup", name, "10.93.0.1"]);
            last = String::from_utf8_lossy(&o.stdout).into_owned();
            if last.contains(&ip1) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(last.contains(&ip1), "{name} via knit DNS: {last}");
    }

    // The published port, from outside the node.
    let got = http_get(w.outside(), &format!("{NODE_UPLINK4}:8080"), "/").unwrap();
    assert!(got.contains("hello-docker"), "{got}");

    // docker restart: a new endpoint (Leave, DeleteEndpoint, CreateEndpoint, Join), still
    // on the network, the port still published.
    d.ok(&["restart", "-t", "1", "web1"]);
    let ip1 = d.ip("web1", "web");
    assert!(d.http_from("c2", &ip1).contains("hello-docker"));
    // (The node's ARP entry for the address pointed at the old container's MAC: knit
    // drops it when the address is attached again.)
    let got = http_get(w.outside(), &format!("{NODE_UPLINK4}:8080"), "/").unwrap();
    assert!(got.contains("hello-docker"), "{got}");
    assert_eq!(w.attachments("web"), 2);

    // network connect / disconnect of a running container.
    d.ok(&[
        "network",
        "create",
        "-d",
        "knit",
        "--subnet",
        "10.94.0.0/24",
        "-o",
        "knit.name=back",
        "back",
    ]);
    d.ok(&["network", "connect", "back", "c2"]);
    let addrs = d.ok(&["exec", "c2", "ip", "-o", "addr"]);
    assert!(addrs.contains("inet 10.94.0."), "{addrs}");
    d.ok(&["network", "disconnect", "back", "c2"]);
    let addrs = d.ok(&["exec", "c2", "ip", "-o", "addr"]);
    assert!(!addrs.contains("inet 10.94.0."), "{addrs}");
    assert!(w.attachments("back") == 0);

    // Bad input: Docker shows knit's error, naming what was wrong; nothing is built.
    let e = d.fail(&[
        "network",
        "create",
        "-d",
        "knit",
        "--subnet",
        "10.95.0.0/24",
        "-o",
        "vlan=4",
        "bad",
    ]);
    assert!(e.contains("vlan"), "{e}");
    let e = d.fail(&[
        "network",
        "create",
        "-d",
        "knit",
        "--subnet",
        "10.96.0.0/24",
        "-o",
        "knit.name=web",
        "web2",
    ]);
    assert!(
        e.contains("knit.name") && e.contains("already carries"),
        "{e}"
    );
    let e = d.fail(&[
        "run",
        "-d",
        "--network",
        "web",
        "--name",
        "c3",
        "-p",
        "80",
        "bb:1",
        "sleep",
        "9",
    ]);
    assert!(e.contains("explicit host port"), "{e}");
    let _ = d.run(&["rm", "-f", "c3"]);
    assert_eq!(w.attachments("web"), 2);

    // knit as Docker's IPAM too: a pool without --subnet is a free one knit picks; the
    // gateway and the containers' addresses come from it.
    d.ok(&[
        "network",
        "create",
        "-d",
        "knit",
        "--ipam-driver",
        "knit",
        "-o",
        "knit.name=auto",
        "auto",
    ]);
    let subnet = d.ok(&[
        "network",
        "inspect",
        "-f",
        "{{(index .IPAM.Config 0).Subnet}}",
        "auto",
    ]);
    assert!(
        subnet.starts_with("10.9") && subnet.ends_with(".0/24"),
        "{subnet}"
    );
    let v = w.json(&["network", "inspect", "auto"]);
    assert_eq!(v["network"]["subnets"][0]["subnet"], subnet.as_str());
    d.ok(&[
        "run",
        "-d",
        "--network",
        "auto",
        "--name",
        "c4",
        "bb:1",
        "sleep",
        "1000",
    ]);
    let ip4 = d.ip("c4", "auto");
    let prefix = subnet.trim_end_matches("0/24");
    assert!(ip4.starts_with(prefix), "{ip4} in {subnet}");
    let pools = |w: &World| {
        std::fs::read_dir(w.state.join("docker/pools"))
            .map(|r| r.count())
            .unwrap_or(0)
    };
    assert_eq!(pools(&w), 1);
    d.ok(&["rm", "-f", "c4"]);
    d.ok(&["network", "rm", "auto"]);
    assert_eq!(pools(&w), 0, "the pool is released with the network");

    // Removing the containers and networks removes knit's side too.
    d.ok(&["rm", "-f", "web1", "c2"]);
    d.ok(&["network", "rm", "web", "back"]);
    let ls = w.ok(&["network", "ls"]);
    assert!(!ls.contains("web") && !ls.contains("back"), "{ls}");
    assert!(w.knit_links().is_empty(), "{:?}", w.knit_links());
    let left = w.node_ip(&["link"]);
    assert!(!left.contains("kd"), "{left}");
}
