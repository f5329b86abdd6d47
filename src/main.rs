use clap::Parser;

fn main() -> std::process::ExitCode {
    tenure::cli::run(tenure::cli::Cli::parse())
}
