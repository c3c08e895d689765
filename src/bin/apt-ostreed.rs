fn main() -> std::process::ExitCode {
    apt_ostree::daemon::main()
}
