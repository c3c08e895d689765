fn main() -> std::process::ExitCode {
    apt_ostree::compose::main()
}
