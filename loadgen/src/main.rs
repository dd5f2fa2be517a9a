//! `soliton-load`: not built yet (issue #4). It exits with status 2 and says so.

fn main() {
    eprintln!("soliton-load: the load generator is not implemented yet (see issue #4)");
    std::process::exit(2);
}
