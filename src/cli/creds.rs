//! `envbuild creds ENV`: an openrc on stdout, and a clouds.yaml (0600) in the state folder, so the
//! standard `openstack` client works against the environment.

use std::os::unix::fs::OpenOptionsExt;

use clap::Args;

use super::Global;
use crate::error::{Error, IoContext, Result};
use crate::spec::template::RuntimeValues;

#[derive(Debug, Args)]
pub struct CredsArgs {
    /// Environment name
    env: String,
}

pub fn run(global: &Global, args: CredsArgs) -> Result<i32> {
    let ws = global.workspace()?;
    let env = ws.load(&args.env, &[])?;
    let cloud = env.cloud.as_ref().ok_or_else(|| {
        Error::Input(format!(
            "environment `{}` declares no [cloud]; it has no credentials to print",
            env.name
        ))
    })?;
    let state = ws.state.machine(&env.name, &cloud.machine)?;
    let running = state.services().ok_or_else(|| {
        Error::Input(format!(
            "`{}` is not up; run `envbuild up {}` first",
            env.name, env.name
        ))
    })?;
    let secrets = ws.state.secrets(&env)?;
    let password = &secrets[&cloud.password_secret];
    let vars = env
        .vars
        .iter()
        .map(|(k, v)| (k.clone(), v.value.clone()))
        .collect();
    let auth_url = RuntimeValues {
        vars: &vars,
        ports: &running.ports,
        dirs: None,
    }
    .render(&cloud.auth_url)
    .map_err(|e| Error::Failed(e.message))?;

    let quote = |s: &str| format!("'{}'", s.replace('\'', r"'\''"));
    println!("export OS_AUTH_URL={}", quote(&auth_url));
    println!("export OS_USERNAME={}", quote(&cloud.username));
    println!("export OS_PASSWORD={}", quote(password));
    println!("export OS_PROJECT_NAME={}", quote(&cloud.project));
    println!("export OS_USER_DOMAIN_NAME={}", quote(&cloud.user_domain));
    println!(
        "export OS_PROJECT_DOMAIN_NAME={}",
        quote(&cloud.project_domain)
    );
    println!("export OS_REGION_NAME={}", quote(&cloud.region));
    println!("export OS_IDENTITY_API_VERSION=3");
    println!("export OS_INTERFACE=public");

    let clouds = format!(
        "clouds:\n  {name}:\n    auth:\n      auth_url: \"{auth_url}\"\n      username: \"{user}\"\n      password: \"{password}\"\n      project_name: \"{project}\"\n      user_domain_name: \"{ud}\"\n      project_domain_name: \"{pd}\"\n    region_name: \"{region}\"\n    identity_api_version: 3\n    interface: public\n",
        name = env.name,
        user = cloud.username,
        project = cloud.project,
        ud = cloud.user_domain,
        pd = cloud.project_domain,
        region = cloud.region,
    );
    let path = ws.state.env_dir(&env.name).join("clouds.yaml");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .ctx(|| format!("writing {}", path.display()))?;
    std::io::Write::write_all(&mut file, clouds.as_bytes())
        .ctx(|| format!("writing {}", path.display()))?;
    if !global.quiet {
        eprintln!(
            "# clouds.yaml written to {} (use: OS_CLIENT_CONFIG_FILE={} openstack --os-cloud {} ...)",
            path.display(),
            path.display(),
            env.name
        );
    }
    Ok(0)
}
