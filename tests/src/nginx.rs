//! nginx inside a lab namespace: its own config, pid file, logs and temp paths in the lab's
//! temp dir, serving one page that names the node, so a client can tell who answered.

use std::fs;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::addr::require_test_address;
use crate::error::{LabError, Result};
use crate::http::{http_get, HttpResponse};
use crate::lab::{run_in_netns, Lab, Netns};
use crate::process::ProcessHandle;
use crate::wait::wait_for;

/// How long nginx gets to answer its first request.
pub const NGINX_START_TIMEOUT: Duration = Duration::from_secs(15);

/// A running nginx started by [`Lab::start_nginx`].
#[derive(Debug, Clone)]
pub struct Nginx {
    process: ProcessHandle,
    listen: SocketAddr,
    body: String,
    dir: PathBuf,
}

impl Nginx {
    /// The nginx master process (its workers share its process group).
    pub fn process(&self) -> &ProcessHandle {
        &self.process
    }

    /// The nginx master process, for callers that track only the process.
    pub fn into_process(self) -> ProcessHandle {
        self.process
    }

    /// Where it listens.
    pub fn listen(&self) -> SocketAddr {
        self.listen
    }

    /// The exact body `GET /` returns: the node name and a newline.
    pub fn body(&self) -> &str {
        &self.body
    }

    /// Its directory (config, pid file, logs, document root).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Its error log so far (empty when nothing was logged).
    pub fn error_log(&self) -> String {
        fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }
}

/// The configuration for one lab nginx: foreground, one worker, everything under `dir`,
/// serving the files in `dir/www`.
pub fn nginx_config(dir: &Path, listen: SocketAddr) -> String {
    let root = dir.join("www");
    nginx_config_with(
        dir,
        &format!(
            "    server {{
        listen {listen};
        root {};
        index index.txt;
    }}
",
            root.display()
        ),
    )
}

/// A lab nginx configuration around `http_body` (upstreams, servers): the process, log and
/// temp-path settings every lab nginx shares, all under `dir`.
pub fn nginx_config_with(dir: &Path, http_body: &str) -> String {
    let dir = dir.display();
    format!(
        "daemon off;
master_process on;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{
    worker_connections 256;
}}
http {{
    access_log off;
    server_tokens off;
    types {{ text/plain txt; }}
    default_type text/plain;
    client_body_temp_path {dir}/tmp/client_body;
    proxy_temp_path {dir}/tmp/proxy;
    fastcgi_temp_path {dir}/tmp/fastcgi;
    uwsgi_temp_path {dir}/tmp/uwsgi;
    scgi_temp_path {dir}/tmp/scgi;
{http_body}}}
"
    )
}

impl Lab {
    /// Starts nginx in `netns`, listening on `listen` (test range only), serving `GET /` with
    /// the body `"<name>\n"`; waits until that page is served. `name` is also the process name.
    pub fn start_nginx(&self, netns: &Netns, name: &str, listen: SocketAddr) -> Result<Nginx> {
        self.start_nginx_checked(netns, name, listen, listen)
    }

    /// [`start_nginx`](Self::start_nginx) listening on `listen`, which may also be the
    /// wildcard address, and waiting until the page is served on `check` (test range only).
    pub fn start_nginx_checked(
        &self,
        netns: &Netns,
        name: &str,
        listen: SocketAddr,
        check: SocketAddr,
    ) -> Result<Nginx> {
        if !listen.ip().is_unspecified() {
            require_test_address(listen.ip())?;
        }
        require_test_address(check.ip())?;
        let dir = self.temp_subdir(&format!("nginx-{name}"))?;
        let www = dir.join("www");
        for sub in [www.clone(), dir.join("tmp")] {
            fs::create_dir_all(&sub).map_err(|err| LabError::io("creating", &sub, err))?;
            fs::set_permissions(&sub, fs::Permissions::from_mode(0o755))
                .map_err(|err| LabError::io("setting permissions of", &sub, err))?;
        }
        let body = format!("{name}\n");
        let page = www.join("index.txt");
        fs::write(&page, &body).map_err(|err| LabError::io("writing", &page, err))?;
        fs::set_permissions(&page, fs::Permissions::from_mode(0o644))
            .map_err(|err| LabError::io("setting permissions of", &page, err))?;
        let config = dir.join("nginx.conf");
        fs::write(&config, nginx_config(&dir, listen))
            .map_err(|err| LabError::io("writing", &config, err))?;

        let mut command = Command::new("nginx");
        command
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(&config)
            .arg("-e")
            .arg(dir.join("error.log"));
        let process = self.spawn(netns, name, &command)?;
        let nginx = Nginx {
            process,
            listen,
            body,
            dir,
        };

        let ready = wait_for(NGINX_START_TIMEOUT, Duration::from_millis(50), || {
            match self.is_running(&nginx.process) {
                Ok(true) => {}
                // Exited (or untrackable): stop polling and report below.
                Ok(false) | Err(_) => return Some(false),
            }
            let served = run_in_netns(netns, || http_get(check, "/", Duration::from_millis(500)));
            match served {
                Ok(Ok(HttpResponse { status: 200, body })) if body == nginx.body => Some(true),
                _ => None,
            }
        });
        match ready {
            Some(true) => Ok(nginx),
            Some(false) => Err(LabError::ExitedEarly {
                name: name.to_owned(),
                status: "exited during start-up".to_owned(),
                log: format!("{}\n{}", nginx.process.log(), nginx.error_log()),
            }),
            None => Err(LabError::Timeout {
                timeout: NGINX_START_TIMEOUT,
                what: format!(
                    "nginx {name} to serve http://{check}/ in {netns}; its log:\n{}\n{}",
                    nginx.process.log(),
                    nginx.error_log()
                ),
            }),
        }
    }

    /// GETs `http://addr/path` from inside `netns`, all within `timeout`.
    pub fn http_get(
        &self,
        netns: &Netns,
        addr: SocketAddr,
        path: &str,
        timeout: Duration,
    ) -> Result<HttpResponse> {
        run_in_netns(netns, || http_get(addr, path, timeout))?
    }
}
