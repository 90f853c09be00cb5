use clap::Parser;

fn main() {
    // Runtimes run CNI plugins with CNI_COMMAND set; otherwise this is the CLI.
    if std::env::var_os("CNI_COMMAND").is_some() {
        std::process::exit(knit::cni::main());
    }
    knit::trace::phase("start");
    let cli = knit::cli::Cli::parse();
    match knit::cli::run(cli) {
        Ok(code) => {
            knit::trace::phase("done");
            std::process::exit(code)
        }
        Err(e) => {
            eprintln!("knit: error: {e}");
            std::process::exit(1);
        }
    }
}
