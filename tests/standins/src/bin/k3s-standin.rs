//! `k3s-standin`: a muster test STAND-IN for k3s (see tests/README.md). Not k3s.
//! Invoked as `k3s-killall.sh` it behaves as `k3s-standin reset`.

fn main() {
    let mut args: Vec<String> = std::env::args().collect();
    let argv0 = args.remove(0);
    if argv0.ends_with("k3s-killall.sh") {
        args.insert(0, "reset".into());
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("k3s-standin: starting the runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = rt.block_on(muster_standins::k3s::main(args));
    std::process::exit(code);
}
