use clap::Parser;

fn main() {
    knit::trace::phase("start");
    let cli = knit::cli::Cli::parse();
    match knit::cli::run(cli) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("knit: error: {e}");
            std::process::exit(1);
        }
    }
}
