fn main() {
    std::process::exit(voxrelay::cli::main());
}
