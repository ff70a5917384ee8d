fn main() {
    eprintln!("loadtest: not built yet (see issue tracker)");
    std::process::exit(2);
}
