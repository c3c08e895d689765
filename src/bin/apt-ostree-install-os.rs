fn main() -> std::process::ExitCode {
    apt_ostree::install::command::main()
}
