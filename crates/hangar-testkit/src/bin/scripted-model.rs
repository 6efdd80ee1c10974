//! The scripted model server as a command, for trying a harness by hand:
//! `scripted-model --listen 127.0.0.1:18100 --write hello.txt=hi --text done`.

use hangar_testkit::model::{Behavior, ModelServer, Turn};

fn main() {
    let mut listen = "127.0.0.1:18100".to_string();
    let mut turns = Vec::new();
    let mut behavior = None;
    let mut args = std::env::args().skip(1);
    let usage = "usage: scripted-model [--listen ADDR] [--shell CMD | --write PATH=TEXT | \
                 --text TEXT]... | --fail MESSAGE | --hang";
    while let Some(a) = args.next() {
        let mut value = || {
            args.next()
                .unwrap_or_else(|| panic!("{a} needs a value\n{usage}"))
        };
        match a.as_str() {
            "--listen" => listen = value(),
            "--shell" => turns.push(Turn::Shell(value())),
            "--text" => turns.push(Turn::Text(value())),
            "--write" => {
                let v = value();
                let (path, content) = v.split_once('=').expect("--write PATH=TEXT");
                turns.push(Turn::Write {
                    path: path.into(),
                    content: format!("{content}\n"),
                });
            }
            "--fail" => {
                behavior = Some(Behavior::Fail {
                    status: 400,
                    message: value(),
                })
            }
            "--hang" => behavior = Some(Behavior::Hang),
            _ => {
                eprintln!("{usage}");
                std::process::exit(2);
            }
        }
    }
    let listener = std::net::TcpListener::bind(&listen)
        .unwrap_or_else(|e| panic!("failed to listen on {listen}: {e}"));
    let server = ModelServer::serve(listener, behavior.unwrap_or(Behavior::Script(turns)));
    eprintln!("scripted model on {}", server.base_url());
    let mut seen = 0;
    loop {
        std::thread::sleep(std::time::Duration::from_millis(200));
        let reqs = server.requests();
        for r in &reqs[seen..] {
            eprintln!(
                "{} {} {}",
                r.method,
                r.path,
                r.body.chars().take(300).collect::<String>()
            );
        }
        seen = reqs.len();
    }
}
