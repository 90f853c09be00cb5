//! knit as the CNI plugin of containerd 1.6's CRI plugin (what a Kubernetes node runs),
//! driven through the CRI API as the kubelet would: RunPodSandbox with a port mapping,
//! a container in the pod, StopPodSandbox, RemovePodSandbox. containerd runs in the
//! test's node namespace and a private mount namespace; its pod image is a busybox-static
//! OCI image the test builds and imports.

mod common;
use common::*;
use hyper_util::rt::TokioIo;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use tonic::transport::{Channel, Endpoint, Uri};

const IMAGE: &str = "knit.test/bb:1";

/// A busybox-static OCI image (one uncompressed layer) as an `oci-archive` tarball.
fn build_image(dir: &Path) -> PathBuf {
    let root = dir.join("img/rootfs");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::create_dir_all(root.join("www")).unwrap();
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    for a in ["sh", "sleep", "httpd"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(a)).unwrap();
    }
    std::fs::write(root.join("www/index.html"), "hello-cri\n").unwrap();
    let script = format!(
        r#"set -e; cd {img}
tar -C rootfs -cf layer.tar .
L=$(sha256sum layer.tar | cut -d' ' -f1); LS=$(stat -c %s layer.tar)
printf '{{"architecture":"amd64","os":"linux","config":{{"Entrypoint":["/bin/sleep"],"Cmd":["100000"],"Env":["PATH=/bin"]}},"rootfs":{{"type":"layers","diff_ids":["sha256:%s"]}}}}' $L > config.json
C=$(sha256sum config.json | cut -d' ' -f1); CS=$(stat -c %s config.json)
printf '{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:%s","size":%s}}]}}' $C $CS $L $LS > manifest.json
M=$(sha256sum manifest.json | cut -d' ' -f1); MS=$(stat -c %s manifest.json)
mkdir -p oci/blobs/sha256
cp layer.tar oci/blobs/sha256/$L; cp config.json oci/blobs/sha256/$C; cp manifest.json oci/blobs/sha256/$M
echo '{{"imageLayoutVersion":"1.0.0"}}' > oci/oci-layout
printf '{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{{"io.containerd.image.name":"{IMAGE}","org.opencontainers.image.ref.name":"1"}}}}]}}' $M $MS > oci/index.json
tar -C oci -cf ../image.tar ."#,
        img = dir.join("img").display()
    );
    sh_ok(&["sh", "-c", &script]);
    dir.join("image.tar")
}

struct Containerd {
    dir: PathBuf,
    sock: String,
    child: Child,
}

impl Containerd {
    fn start(w: &World) -> Containerd {
        assert!(
            Path::new("/usr/bin/containerd").exists(),
            "containerd is not installed (scripts/test.sh installs it)"
        );
        let dir = std::env::temp_dir().join(format!("{}-containerd", w.prefix));
        let _ = std::fs::remove_dir_all(&dir);
        for d in ["root", "state", "cni-bin", "cni-conf"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        std::fs::copy(KNIT, dir.join("cni-bin/knit")).unwrap();
        // containerd brings the pod's loopback up with the reference `loopback` plugin.
        std::fs::copy("/usr/lib/cni/loopback", dir.join("cni-bin/loopback"))
            .expect("containernetworking-plugins' loopback");
        // The CNI configuration README.md documents for containerd, on the test's state.
        let conf = serde_json::json!({
            "cniVersion": "1.0.0", "name": "pods",
            "plugins": [{
                "type": "knit", "bridge": "knit0", "isGateway": true, "isDefaultGateway": true,
                "ipMasq": true, "stateDir": w.state,
                "capabilities": {"portMappings": true},
                "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.88.0.0/24"}]]}
            }]
        });
        std::fs::write(dir.join("cni-conf/10-knit.conflist"), conf.to_string()).unwrap();
        let sock = format!("{}/containerd.sock", dir.display());
        let config = format!(
            r#"version = 2
root = "{d}/root"
state = "{d}/state"
[grpc]
  address = "{sock}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{IMAGE}"
  # This machine withholds CAP_SYS_RESOURCE, so the pod sandbox's oom_score_adj of -998
  # cannot be set; containerd's own option for such hosts keeps it at containerd's.
  restrict_oom_score_adj = true
  # Pod namespaces under the test's own directory, not the host's /run/netns.
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "native"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{d}/cni-bin"
    conf_dir = "{d}/cni-conf"
"#,
            d = dir.display()
        );
        std::fs::write(dir.join("config.toml"), config).unwrap();
        let child = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "nsenter"])
            .arg(format!("--net=/run/netns/{}", w.node))
            .args(["containerd", "--config"])
            .arg(dir.join("config.toml"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("containerd.log")).unwrap())
            .spawn()
            .unwrap();
        let c = Containerd { dir, sock, child };
        eventually_within(
            "containerd's socket",
            std::time::Duration::from_secs(60),
            || Path::new(&c.sock).exists(),
        );
        let image = build_image(&c.dir);
        eventually_within("image imported", std::time::Duration::from_secs(60), || {
            Command::new("ctr")
                .args([
                    "-a",
                    &c.sock,
                    "-n",
                    "k8s.io",
                    "images",
                    "import",
                    "--snapshotter",
                    "native",
                ])
                .arg(&image)
                .output()
                .unwrap()
                .status
                .success()
        });
        c
    }

    async fn client(&self) -> RuntimeServiceClient<Channel> {
        let sock = self.sock.clone();
        let channel = Endpoint::try_from("http://[::]")
            .unwrap()
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let sock = sock.clone();
                async move {
                    Ok::<_, std::io::Error>(TokioIo::new(
                        tokio::net::UnixStream::connect(sock).await?,
                    ))
                }
            }))
            .await
            .expect("connect to containerd's CRI socket");
        RuntimeServiceClient::new(channel)
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(25).collect();
            eprintln!("containerd.log (last lines):");
            for l in tail.iter().rev() {
                eprintln!("  {l}");
            }
        }
        // Shims outlive containerd: they are found by the socket they were started for.
        let _ = Command::new("pkill").args(["-f", &self.sock]).status();
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = Command::new("pkill")
            .args(["-9", "-f", &self.sock])
            .status();
        std::thread::sleep(std::time::Duration::from_millis(300));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn pod_config(name: &str, ports: Vec<PortMapping>) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}"),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: name.into(),
        port_mappings: ports,
        ..Default::default()
    }
}

/// The pod's IP and the PID of its sandbox process (whose namespace is the pod's).
async fn pod_status(c: &mut RuntimeServiceClient<Channel>, id: &str) -> (String, u32) {
    let st = c
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: id.into(),
            verbose: true,
        })
        .await
        .unwrap()
        .into_inner();
    let ip = st.status.unwrap().network.unwrap().ip;
    let info: serde_json::Value = serde_json::from_str(&st.info["info"]).unwrap();
    (ip, info["pid"].as_u64().unwrap() as u32)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_through_the_cri_api_on_knit() {
    let mut w = World::new().with_outside();
    let ctd = Containerd::start(&w);
    let mut c = ctd.client().await;

    let web_cfg = pod_config(
        "web",
        vec![PortMapping {
            protocol: Protocol::Tcp as i32,
            container_port: 80,
            host_port: 8080,
            host_ip: String::new(),
        }],
    );
    let web = c
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(web_cfg.clone()),
            runtime_handler: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .pod_sandbox_id;
    let client = c
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(pod_config("client", vec![])),
            runtime_handler: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .pod_sandbox_id;
    let (web_ip, _) = pod_status(&mut c, &web).await;
    let (client_ip, client_pid) = pod_status(&mut c, &client).await;
    assert!(
        web_ip.starts_with("10.88.0.") && client_ip.starts_with("10.88.0."),
        "{web_ip} {client_ip}"
    );
    let v = w.json(&["network", "inspect", "pods"]);
    assert_eq!(v["attachments"].as_array().unwrap().len(), 2, "{v}");

    // A web server in the pod (a container sharing the pod's namespace).
    let ctr = c
        .create_container(CreateContainerRequest {
            pod_sandbox_id: web.clone(),
            config: Some(ContainerConfig {
                metadata: Some(ContainerMetadata {
                    name: "httpd".into(),
                    attempt: 0,
                }),
                image: Some(ImageSpec {
                    image: IMAGE.into(),
                    ..Default::default()
                }),
                command: vec!["/bin/httpd".into()],
                args: vec![
                    "-f".into(),
                    "-p".into(),
                    "80".into(),
                    "-h".into(),
                    "/www".into(),
                ],
                ..Default::default()
            }),
            sandbox_config: Some(web_cfg),
        })
        .await
        .unwrap()
        .into_inner()
        .container_id;
    c.start_container(StartContainerRequest {
        container_id: ctr.clone(),
    })
    .await
    .unwrap();

    // Pod to pod, and the hostPort from outside the node.
    let client_ns = format!("{}-podclient", w.prefix);
    sh_ok(&["ip", "netns", "attach", &client_ns, &client_pid.to_string()]);
    w.track(&client_ns);
    assert!(ping(&client_ns, &web_ip));
    let mut got = Err(String::new());
    for _ in 0..50 {
        got = http_get(&client_ns, &format!("{web_ip}:80"), "/");
        if got.as_ref().is_ok_and(|g| g.contains("hello-cri")) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(got.unwrap().contains("hello-cri"));
    let got = http_get(w.outside(), &format!("{NODE_UPLINK4}:8080"), "/").unwrap();
    assert!(got.contains("hello-cri"), "{got}");

    // Stop and remove: nothing of the pods is left in knit's store or the kernel.
    for pod in [&web, &client] {
        c.stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: pod.to_string(),
        })
        .await
        .unwrap();
        c.remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: pod.to_string(),
        })
        .await
        .unwrap();
    }
    let v = w.json(&["network", "inspect", "pods"]);
    assert!(v["attachments"].as_array().unwrap().is_empty(), "{v}");
    assert!(
        w.knit_links().iter().all(|l| !l.starts_with("kv")),
        "{:?}",
        w.knit_links()
    );
    assert!(!w.nft_table().contains("8080"));
    assert!(http_get(w.outside(), &format!("{NODE_UPLINK4}:8080"), "/").is_err());
}
