//! `defender-soar`: CLI entry point (see `cli` for the commands).

fn main() -> std::process::ExitCode {
    defender_soar::cli::main()
}
