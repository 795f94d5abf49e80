//! `k3s-standin`: placeholder, filled below.
pub async fn main(_args: Vec<String>) -> i32 {
    eprintln!("k3s-standin: not implemented yet");
    1
}
