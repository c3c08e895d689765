/* Varlink in the browser: one call per Cockpit stream channel to
 * apt-ostreed's Unix socket (docs/cockpit.md).
 *
 * Varlink messages are JSON, each ended by a NUL byte. A text channel
 * cannot carry NUL (cockpit-ws drops the whole connection), so the channel
 * is binary and the replies are split on NUL here, whatever the chunks.
 * `superuser: "try"` runs the call as root where the user has
 * administrative access, and as the user otherwise: then polkit decides,
 * as it does for the CLI.
 */
"use strict";

const AptOstreeVarlink = (() => {
    const SOCKET = "/run/apt-ostree/org.aptostree.Sysroot";
    const INTERFACE = "org.aptostree.Sysroot";

    /* The methods this page calls and the parameters it gives each: a test
     * (tests/cockpit.rs) checks them against interfaces/. */
    const METHODS = {
        GetStatus: [],
        Upgrade: ["check", "preview", "downloadOnly", "allowInteractiveAuthentication"],
        Rollback: ["reboot", "allowInteractiveAuthentication"],
        PinDeployment: ["id", "unpin", "allowInteractiveAuthentication"],
        Cleanup: ["pending", "rollback", "base", "metadata", "bootFailures", "allowInteractiveAuthentication"],
        Rebase: ["refspec", "allowInteractiveAuthentication"],
        Install: ["packages", "allowInteractiveAuthentication"],
        Uninstall: ["packages", "allowInteractiveAuthentication"],
        Search: ["words"],
        Watch: [],
        Cancel: ["transaction", "allowInteractiveAuthentication"],
    };

    /* A Varlink error reply: its name (org.aptostree.Sysroot.FetchFailed,
     * org.varlink.service.PermissionDenied) and parameters. */
    class VarlinkError extends Error {
        constructor(name, parameters) {
            super(describe(name, parameters || {}));
            this.error = name;
            this.parameters = parameters || {};
        }

        get notAllowed() {
            return this.error === "org.varlink.service.PermissionDenied";
        }
    }

    function describe(name, parameters) {
        const short = name.split(".").pop();
        const details = parameters.reason || parameters.message ||
            Object.entries(parameters).map(([k, v]) => `${k}: ${JSON.stringify(v)}`).join(", ");
        return details ? `${short}: ${details}` : short;
    }

    function concat(a, b) {
        const out = new Uint8Array(a.length + b.length);
        out.set(a, 0);
        out.set(b, a.length);
        return out;
    }

    /* Call METHOD with PARAMETERS. With options.more, each reply but the
     * last goes to options.onReply as it arrives. Resolves with the last
     * reply's parameters; rejects with a VarlinkError, or an Error naming
     * the channel's problem ("access-denied", "not-found"). */
    function call(method, parameters, options) {
        options = options || {};
        if (!(method in METHODS))
            throw new Error(`${method}: not a method this page knows`);
        for (const name of Object.keys(parameters || {})) {
            if (!METHODS[method].includes(name))
                throw new Error(`${method}: no parameter ${name}`);
        }
        return new Promise((resolve, reject) => {
            const channel = cockpit.channel({
                payload: "stream",
                unix: SOCKET,
                superuser: "try",
                binary: true,
            });
            const decoder = new TextDecoder();
            let buffer = new Uint8Array(0);
            let finished = false;
            const finish = (settle, value) => {
                if (finished)
                    return;
                finished = true;
                channel.close();
                settle(value);
            };
            channel.addEventListener("message", (_event, data) => {
                buffer = concat(buffer, data);
                let end;
                while (!finished && (end = buffer.indexOf(0)) >= 0) {
                    const text = decoder.decode(buffer.subarray(0, end));
                    buffer = buffer.slice(end + 1);
                    let message;
                    try {
                        message = JSON.parse(text);
                    } catch (e) {
                        finish(reject, new Error(`apt-ostreed sent no JSON: ${e}`));
                        return;
                    }
                    if (message.error) {
                        finish(reject, new VarlinkError(message.error, message.parameters));
                    } else if (message.continues) {
                        if (options.onReply)
                            options.onReply(message.parameters || {});
                    } else {
                        finish(resolve, message.parameters || {});
                    }
                }
            });
            channel.addEventListener("close", (_event, details) => {
                const problem = (details && details.problem) || "disconnected";
                finish(reject, new Error(problem === "not-found"
                    ? "apt-ostreed is not running here (no socket at " + SOCKET + ")"
                    : `apt-ostreed cannot be reached: ${problem}`));
            });
            const message = { method: `${INTERFACE}.${method}`, parameters: parameters || {} };
            if (options.more)
                message.more = true;
            channel.send(new TextEncoder().encode(JSON.stringify(message) + "\0"));
        });
    }

    return { call, METHODS, VarlinkError, SOCKET };
})();
