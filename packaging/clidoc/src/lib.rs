//! Man pages and shell completions generated from a binary's own clap
//! command, so they never drift from `--help`.
//!
//! Each CLI (`lbd`, `flowmark`, `lbd-trace`) has a hidden `generate-docs DIR`
//! subcommand that calls [`write`] with its `Cli::command()`; `make packages`
//! runs it on the release binaries and puts the files into the packages
//! (see docs/packaging.md).
use std::{
    fs,
    io::{self, Write},
    path::{Path, PathBuf},
};

use clap::Command;
use clap_complete::Shell;
use clap_mangen::Man;

/// The subcommand name each binary hides in its CLI.
pub const SUBCOMMAND: &str = "generate-docs";

/// The shells we ship completions for.
const SHELLS: [Shell; 3] = [Shell::Bash, Shell::Zsh, Shell::Fish];

/// The file each shell loads completions of command `bin` from.
fn completion_file(shell: Shell, bin: &str) -> String {
    match shell {
        Shell::Zsh => format!("_{bin}"),
        Shell::Fish => format!("{bin}.fish"),
        _ => bin.to_string(),
    }
}

#[derive(Debug, thiserror::Error)]
#[error("writing {path}: {source}")]
pub struct Error {
    path: PathBuf,
    source: io::Error,
}

/// The hidden subcommand's body: [`write`], errors to stderr, exit 1 on one.
pub fn main(cmd: Command, out: &Path) -> std::process::ExitCode {
    match write(cmd, out) {
        Ok(_) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{SUBCOMMAND}: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Writes into `out`:
/// - `man/BIN.1`: the command, its options, and every visible subcommand
///   (usage, description, options) in a COMMANDS section, so `man BIN` alone
///   documents all of it;
/// - `man/BIN-SUB.1`: one page per subcommand (like `git-commit(1)`);
/// - `completions/{BIN, _BIN, BIN.fish}`: bash, zsh and fish completions.
///
/// Returns the files written.
pub fn write(cmd: Command, out: &Path) -> Result<Vec<PathBuf>, Error> {
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    let bin = cmd.get_name().to_string();
    let man_dir = out.join("man");
    let comp_dir = out.join("completions");
    let mut written = Vec::new();
    for dir in [&man_dir, &comp_dir] {
        fs::create_dir_all(dir).map_err(|source| Error {
            path: dir.clone(),
            source,
        })?;
    }

    let page = man_dir.join(format!("{bin}.1"));
    save(
        &page,
        &main_page(&cmd).map_err(|source| err(&page, source))?,
    )?;
    written.push(page);
    for sub in visible_subcommands(&cmd) {
        written.extend(subcommand_pages(sub, &man_dir)?);
    }

    for shell in SHELLS {
        let path = comp_dir.join(completion_file(shell, &bin));
        let mut buf = Vec::new();
        clap_complete::generate(shell, &mut cmd.clone(), &bin, &mut buf);
        save(&path, &buf)?;
        written.push(path);
    }
    Ok(written)
}

fn visible_subcommands(cmd: &Command) -> impl Iterator<Item = &Command> {
    cmd.get_subcommands().filter(|s| !s.is_hide_set())
}

/// The top-level page: clap_mangen's sections, then each subcommand's
/// synopsis, description and options as a subsection of COMMANDS.
fn main_page(cmd: &Command) -> io::Result<Vec<u8>> {
    let man = Man::new(cmd.clone());
    let mut out = Vec::new();
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    man.render_description_section(&mut out)?;
    if cmd.get_arguments().any(|a| !a.is_hide_set()) {
        man.render_options_section(&mut out)?;
    }
    writeln!(out, ".SH COMMANDS")?;
    for sub in visible_subcommands(cmd) {
        command_section(sub, &mut out)?;
    }
    man.render_version_section(&mut out)?;
    writeln!(out, ".SH \"SEE ALSO\"")?;
    let see_also: Vec<String> = visible_subcommands(cmd)
        .map(|s| format!("\\fB{}\\fR(1)", page_name(s)))
        .collect();
    writeln!(out, "{}", see_also.join(", "))?;
    Ok(out)
}

/// One subcommand inside its parent's page: `.SS` with its full usage, then
/// its description and options with their own section headings demoted, so
/// they nest under it. Nested subcommands follow recursively.
fn command_section(cmd: &Command, out: &mut Vec<u8>) -> io::Result<()> {
    let usage = cmd.clone().render_usage().to_string();
    let usage = usage.trim_start_matches("Usage: ");
    writeln!(out, ".SS \"{}\"", usage.replace('"', "\\(dq"))?;
    let man = Man::new(cmd.clone());
    let mut body = Vec::new();
    man.render_description_section(&mut body)?;
    if cmd.get_arguments().any(|a| !a.is_hide_set()) {
        man.render_options_section(&mut body)?;
    }
    for line in String::from_utf8_lossy(&body).lines() {
        match line.strip_prefix(".SH ") {
            Some("DESCRIPTION") => {}
            Some(heading) => writeln!(out, ".PP\n\\fI{}:\\fR", title_case(heading))?,
            None => writeln!(out, "{line}")?,
        }
    }
    for sub in visible_subcommands(cmd) {
        command_section(sub, out)?;
    }
    Ok(())
}

/// "OPTIONS" -> "Options".
fn title_case(heading: &str) -> String {
    let lower = heading.to_lowercase();
    let mut chars = lower.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

/// `lbd-run(1)`, `flowmark-registry-check(1)`, ...: clap_mangen's own pages.
fn subcommand_pages(cmd: &Command, dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let mut written = Vec::new();
    let path = dir.join(format!("{}.1", page_name(cmd)));
    let mut page = Vec::new();
    Man::new(cmd.clone())
        .render(&mut page)
        .map_err(|source| err(&path, source))?;
    save(&path, &page)?;
    written.push(path);
    for sub in visible_subcommands(cmd) {
        written.extend(subcommand_pages(sub, dir)?);
    }
    Ok(written)
}

fn page_name(cmd: &Command) -> String {
    cmd.get_display_name()
        .unwrap_or_else(|| cmd.get_name())
        .to_string()
}

fn save(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    fs::write(path, bytes).map_err(|source| err(path, source))
}

fn err(path: &Path, source: io::Error) -> Error {
    Error {
        path: path.to_path_buf(),
        source,
    }
}
