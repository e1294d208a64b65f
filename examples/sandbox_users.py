"""Restricted volumes with a non-root user: untrusted code reads what it may, writes only
where it was let, and cannot change either rule.

    python examples/sandbox_users.py

The image adds a user (its build's commands run in a jail, so ``useradd`` writes the
image's /etc/passwd, not the host's); a first sandbox, as root, fills a reference volume
and gives the user one folder of an outputs volume; a second runs the user's code with
the reference volume mounted read-only. Needs bubblewrap, and a server running as root
(it maps the user's ids into each sandbox's user namespace). Written against Modal's API:
only the import differs.
"""

import shoal as modal

app = modal.App.lookup("example-sandbox-users", create_if_missing=True)
image = modal.Image.debian_slim().run_commands(
    "useradd --create-home --uid 1000 --shell /bin/sh coder",
)
reference = modal.Volume.from_name("example-reference", create_if_missing=True)
outputs = modal.Volume.from_name("example-outputs", create_if_missing=True)


def main() -> None:
    # Root prepares both volumes: facts to read, and one folder the user owns.
    setup = modal.Sandbox.create(
        app=app, image=image, volumes={"/reference": reference, "/outputs": outputs}
    )
    prepare = setup.exec(
        "sh",
        "-c",
        "echo 'the answer is 42' > /reference/facts.txt && mkdir -p /outputs/coder "
        "&& chown coder:coder /outputs/coder && chmod 700 /outputs/coder",
    )
    assert prepare.wait() == 0, prepare.stderr.read()
    setup.terminate()

    sb = modal.Sandbox.create(
        app=app,
        image=image,
        volumes={"/reference": reference.read_only(), "/outputs": outputs},
        timeout=120,
    )
    try:
        for what, script in [
            ("who runs", "whoami && id -u && echo $HOME"),
            ("read the reference", "cat /reference/facts.txt"),
            ("change the reference", "echo tampered > /reference/facts.txt"),
            ("write outside its folder", "echo hi > /outputs/escaped.txt"),
            ("become root", "su -c id root </dev/null"),
            ("write its own folder", "wc -w < /reference/facts.txt > /outputs/coder/words"),
            ("write its home", "echo notes > ~/notes.txt && cat ~/notes.txt"),
        ]:
            p = sb.exec("su", "coder", "-c", script)
            code = p.wait()
            said = (p.stdout.read() + p.stderr.read()).strip().replace("\n", " | ")
            print(f"{what:26} exit {code}: {said}")
        words = sb.exec("cat", "/outputs/coder/words")
        words.wait()
        print(f"{'root reads its result':26} {words.stdout.read().strip()} words")
    finally:
        sb.terminate()


if __name__ == "__main__":
    main()
