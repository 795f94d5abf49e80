//! `kubeadm-standin`: a muster test STAND-IN for kubeadm (see tests/README.md). Not kubeadm.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kubeadm-standin: starting the runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = rt.block_on(muster_standins::kubeadm::main(args));
    std::process::exit(code);
}
