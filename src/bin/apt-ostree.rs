fn main() -> std::process::ExitCode {
    apt_ostree::cli::main()
}
