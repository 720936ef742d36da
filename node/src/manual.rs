//! A program's manual, generated from the clap definitions it parses its
//! command line with, so that the man pages and completions the package
//! ships can never describe flags the program no longer has.

use std::path::{Path, PathBuf};

/// Writes, under `dir`: `man/NAME.1` and one page per subcommand
/// (`NAME-SUB.1`, as git and cargo name theirs), `bash/NAME` and
/// `zsh/_NAME`, the files the distribution's completion loaders look for.
pub fn write(mut command: clap::Command, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    command.build();
    let name = command.get_name().to_string();
    let man = dir.join("man");
    std::fs::create_dir_all(&man)?;
    let mut written = Vec::new();
    page(&command, &name, &man, &mut written)?;
    for (shell, file) in [
        (clap_complete::Shell::Bash, name.clone()),
        (clap_complete::Shell::Zsh, format!("_{name}")),
    ] {
        let shell_dir = dir.join(shell.to_string());
        std::fs::create_dir_all(&shell_dir)?;
        let path = shell_dir.join(file);
        let mut out = std::fs::File::create(&path)?;
        clap_complete::generate(shell, &mut command.clone(), name.clone(), &mut out);
        written.push(path);
    }
    Ok(written)
}

fn page(
    command: &clap::Command,
    name: &str,
    dir: &Path,
    written: &mut Vec<PathBuf>,
) -> std::io::Result<()> {
    // A subcommand's page is titled with its full name, so that `man
    // attestgate-repo-publish` shows `attestgate repo publish` usage.
    let titled = command.clone().name(name.to_string());
    let path = dir.join(format!("{name}.1"));
    let mut out = std::fs::File::create(&path)?;
    clap_mangen::Man::new(titled).render(&mut out)?;
    written.push(path);
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        if sub.get_name() == "help" {
            continue;
        }
        page(sub, &format!("{name}-{}", sub.get_name()), dir, written)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn every_subcommand_gets_a_page_and_both_shells_a_script() {
        let command = clap::Command::new("tool")
            .about("a tool")
            .arg(clap::Arg::new("config").long("config"))
            .subcommand(
                clap::Command::new("repo")
                    .about("repositories")
                    .subcommand(clap::Command::new("publish").about("publish one")),
            )
            .subcommand(clap::Command::new("secret").hide(true));
        let dir = tempfile::tempdir().unwrap();
        let written = write(command, dir.path()).unwrap();
        let names: Vec<String> = written
            .iter()
            .map(|p| p.strip_prefix(dir.path()).unwrap().display().to_string())
            .collect();
        assert_eq!(
            names,
            [
                "man/tool.1",
                "man/tool-repo.1",
                "man/tool-repo-publish.1",
                "bash/tool",
                "zsh/_tool"
            ]
        );
        let top = std::fs::read_to_string(dir.path().join("man/tool.1")).unwrap();
        assert!(
            top.contains(".TH tool 1") && top.contains("\\-\\-config"),
            "{top}"
        );
        let publish = std::fs::read_to_string(dir.path().join("man/tool-repo-publish.1")).unwrap();
        assert!(publish.contains("tool\\-repo\\-publish"), "{publish}");
        let bash = std::fs::read_to_string(dir.path().join("bash/tool")).unwrap();
        assert!(bash.contains("--config") && bash.contains("publish"));
    }
}
