//! `helm-standin`: a muster test STAND-IN for `helm template` (see tests/README.md). Not Helm.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::process::exit(muster_standins::helm::main(args));
}
