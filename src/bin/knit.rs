use clap::Parser;

fn main() {
    // Runtimes run CNI plugins with CNI_COMMAND set; otherwise this is the CLI.
    if std::env::var_os("CNI_COMMAND").is_some() {
        std::process::exit(knit::cni::main());
    }
    // netavark runs its plugins as `PLUGIN create|setup NETNS|teardown NETNS|info`; no CLI
    // command has these names.
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args
        .first()
        .is_some_and(|a| knit::netavark::COMMANDS.contains(&a.as_str()))
    {
        std::process::exit(knit::netavark::main(&args));
    }
    knit::trace::phase("start");
    // An empty KNIT_STATE_DIR means "not set", not "a value is required".
    if std::env::var_os("KNIT_STATE_DIR").is_some_and(|v| v.is_empty()) {
        // SAFETY: single-threaded at this point (nothing has spawned threads yet).
        unsafe { std::env::remove_var("KNIT_STATE_DIR") };
    }
    let cli = knit::cli::Cli::parse();
    // A closed stdout (`knit ... | head -1`) must not turn a command that did its work into
    // a panic: Rust ignores SIGPIPE, so printing fails with EPIPE and `println!` panics.
    // Commands print after they acted: restore the default so the process ends quietly,
    // as other CLI tools do. The demo, the daemon and the ingress keep ignoring it (the demo must get
    // to its cleanup; the daemon and the ingress must keep serving).
    if !matches!(
        cli.command,
        knit::cli::Command::Demo { .. }
            | knit::cli::Command::Daemon(_)
            | knit::cli::Command::Ingress(knit::cli::IngressCmd::Serve(_))
    ) {
        // SAFETY: setting a signal disposition to its default before any threads start.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    let counted = cli.command.label().map(|l| (l, cli.state_dir.clone()));
    let started = std::time::Instant::now();
    let result = knit::cli::run(cli);
    if let Some((label, dir)) = counted {
        knit::metrics::record_command(&dir, label, started.elapsed());
    }
    match result {
        Ok(code) => {
            knit::trace::phase("done");
            std::process::exit(code)
        }
        Err(e) => {
            eprintln!("knit: error: {e}");
            std::process::exit(e.exit_code());
        }
    }
}
