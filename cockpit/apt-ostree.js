/* apt-ostree's Cockpit page: what `apt-ostree status` shows, and the
 * changes, each one Varlink call to apt-ostreed (varlink.js). A change runs
 * as the daemon's transaction; its progress streams into the page, and a
 * window opened while one runs attaches to it (Watch). */
"use strict";

const { call, VarlinkError } = AptOstreeVarlink;
const $ = (id) => document.getElementById(id);

function element(tag, attributes, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attributes || {})) {
        if (key === "class")
            node.className = value;
        else if (key.startsWith("data-"))
            node.setAttribute(key, value);
        else
            node[key] = value;
    }
    for (const child of children.flat()) {
        if (child !== null && child !== undefined && child !== false)
            node.append(child instanceof Node ? child : String(child));
    }
    return node;
}

/* ---------- Messages ---------- */

function showError(error) {
    const box = $("error");
    if (error instanceof VarlinkError && error.notAllowed) {
        box.textContent = "Not allowed: your account may not make this change " +
            "(turn on administrative access, or ask an administrator).";
        box.dataset.error = error.error;
    } else if (error instanceof VarlinkError) {
        box.textContent = `${error.error}: ${error.message}`;
        box.dataset.error = error.error;
    } else {
        box.textContent = String(error.message || error);
        box.dataset.error = "";
    }
    box.hidden = false;
}

function clearMessages() {
    $("error").hidden = true;
    $("notice").hidden = true;
}

function notice(text) {
    $("notice").textContent = text;
    $("notice").hidden = false;
}

/* ---------- Deployments ---------- */

function origin(d) {
    if (d.containerImageReference)
        return d.containerImageReference + (d.imageDigest ? ` @ ${d.imageDigest.slice(0, 19)}` : "");
    return d.refspec || "(local)";
}

function badges(d) {
    const list = [];
    if (d.booted) list.push(["booted", "Booted"]);
    if (d.staged) list.push(["staged", "Staged"]);
    if (d.default && !d.booted) list.push(["default", "Next boot"]);
    if (d.rollback) list.push(["rollback", "Rollback"]);
    if (d.pinned) list.push(["pinned", "Pinned"]);
    if (d.bootAssessment === "unassessed")
        list.push(["trial", `On trial (${d.bootTriesLeft ?? "?"} tries left)`]);
    if (d.bootAssessment === "failed")
        list.push(["failed", `Failed to boot (${d.bootFailure || "rolled back"})`]);
    if (d.liveCommit) list.push(["live", "Live changes"]);
    return list.map(([kind, text]) => element("span", { class: `badge ${kind}`, "data-badge": kind }, text));
}

function packageLine(label, names, kind, withUninstall) {
    if (!names || names.length === 0)
        return null;
    const items = names.map(name => element("li", {},
        element("span", { class: "package", "data-package": name }, name),
        withUninstall
            ? element("button", {
                type: "button", class: "link uninstall-button", "data-package": name,
                onclick: () => run("Uninstall", { packages: [name] }, `Uninstall ${name}`),
            }, "Uninstall")
            : null));
    return element("div", { class: `packages-line ${kind}` },
        element("span", { class: "label" }, label),
        element("ul", { class: "packages" }, items));
}

function deploymentItem(d) {
    const when = d.timestamp ? new Date(d.timestamp * 1000).toLocaleString() : "";
    return element("li", {
        class: "deployment" + (d.booted ? " booted" : ""),
        "data-index": d.index,
        "data-checksum": d.checksum,
        "data-id": d.id,
    },
    element("div", { class: "deployment-head" },
        element("strong", { class: "origin" }, origin(d)),
        element("span", { class: "version" }, d.version ? `Version ${d.version}` : ""),
        badges(d),
        // A staged deployment is written at shutdown: there is nothing to pin yet.
        d.staged
            ? null
            : element("button", {
                type: "button", class: "link pin-button", "data-id": d.id,
                onclick: () => run("PinDeployment", { id: d.id, unpin: d.pinned },
                    `${d.pinned ? "Unpin" : "Pin"} ${d.version || d.checksum.slice(0, 12)}`),
            }, d.pinned ? "Unpin" : "Pin")),
    element("div", { class: "muted" },
        `Commit ${d.checksum.slice(0, 12)}`,
        d.baseChecksum ? ` on base ${d.baseChecksum.slice(0, 12)}` : "",
        when ? ` · ${when}` : ""),
    packageLine("Layered", d.requestedPackages.concat(d.requestedLocalPackages), "layered", d.default),
    packageLine("Removed from the base", d.removedBasePackages, "removed", false),
    packageLine("Replaced in the base", d.replacedBasePackages, "replaced", false),
    packageLine("Live", d.livePackages, "live", false));
}

function showDeployments(status) {
    const list = $("deployments");
    list.replaceChildren(...status.deployments.map(deploymentItem));
    $("status-line").textContent = status.deployments.length
        ? `${status.deployments.length} deployment(s) in ${status.sysroot}, newest first`
        : "No deployments.";
    const hasRollback = status.deployments.some(d => d.rollback);
    $("rollback-button").disabled = !hasRollback;
    if (!document.body.dataset.shownMs)
        document.body.dataset.shownMs = String(Math.round(performance.now()));
    document.body.dataset.loaded = "true";
}

async function refresh() {
    try {
        const status = await call("GetStatus", {});
        showDeployments(status);
        if (status.transaction && !running)
            attach(status.transaction);
        return status;
    } catch (e) {
        $("status-line").textContent = "";
        showError(e);
        document.body.dataset.loaded = "error";
        return null;
    }
}

/* ---------- Transactions ---------- */

let running = null;

function showTransaction(title) {
    $("transaction").hidden = false;
    $("transaction-title").textContent = title;
    $("transaction-task").textContent = "";
    $("transaction-log").textContent = "";
    $("transaction-log").hidden = true;
    $("transaction-progress").hidden = true;
    $("cancel-button").disabled = false;
    $("cancel-button").hidden = false;
    document.body.dataset.transaction = "running";
    for (const button of document.querySelectorAll(".actions button, form button, .uninstall-button, .install-result, .pin-button"))
        button.disabled = true;
}

function onProgress(reply) {
    const p = reply.progress;
    if (!p)
        return;
    running = running || {};
    running.id = p.transaction;
    if (p.task && p.task !== $("transaction-title").textContent)
        $("transaction-task").textContent = p.task;
    if (p.kind === "percent" && typeof p.percent === "number") {
        $("transaction-progress").hidden = false;
        $("transaction-progress").value = p.percent;
    }
    if (p.message) {
        const log = $("transaction-log");
        log.hidden = false;
        log.textContent += p.message + "\n";
        log.scrollTop = log.scrollHeight;
    }
}

async function endTransaction(result) {
    running = null;
    $("cancel-button").hidden = true;
    $("transaction-task").textContent = result ? "(done)" : "(ended)";
    $("transaction-progress").hidden = true;
    for (const button of document.querySelectorAll(".actions button, form button"))
        button.disabled = false;
    if (result && result.message)
        notice(result.message + (result.rebootRequired ? " Reboot to use it." : ""));
    await refresh();
    // "done" once the deployments show what it left (unless the refresh
    // found another transaction and follows that one now).
    if (!running)
        document.body.dataset.transaction = "done";
}

/* Start METHOD as a transaction and follow it to its end. */
async function run(method, parameters, title) {
    clearMessages();
    // What a check found is stale once anything else ran.
    if (!parameters.preview && !parameters.downloadOnly)
        $("update-available").hidden = true;
    running = { id: null, method };
    showTransaction(title);
    let result = null;
    try {
        const reply = await call(method, { ...parameters, allowInteractiveAuthentication: true },
            { more: true, onReply: onProgress });
        result = reply.result;
        if (result && result.update)
            showUpdate(result);
    } catch (e) {
        showError(e);
    }
    await endTransaction(result);
    return result;
}

/* Follow a transaction another window or the CLI started. */
async function attach(transaction) {
    running = { id: transaction.id, method: transaction.method };
    showTransaction(`${transaction.title} (started elsewhere)`);
    let result = null;
    try {
        const reply = await call("Watch", {}, { more: true, onReply: onProgress });
        result = reply.result;
    } catch (e) {
        if (!(e instanceof VarlinkError && e.error.endsWith(".NoTransaction")))
            showError(e);
    }
    await endTransaction(result);
}

async function cancel() {
    $("cancel-button").disabled = true;
    try {
        const parameters = { allowInteractiveAuthentication: true };
        if (running && running.id)
            parameters.transaction = running.id;
        await call("Cancel", parameters);
        notice("Cancelling…");
    } catch (e) {
        showError(e);
    }
}

/* ---------- Updates ---------- */

function showUpdate(result) {
    const update = result.update;
    const box = $("update-available");
    if (!update) {
        box.hidden = true;
        return;
    }
    $("update-summary").textContent =
        `${update.version ? "Version " + update.version : "Commit"} (${update.checksum.slice(0, 12)})`;
    const diff = result.diff || update.diff;
    const items = [];
    if (diff) {
        for (const p of diff.upgraded) items.push(`${p.name} ${p.fromVersion} → ${p.toVersion}`);
        for (const p of diff.downgraded) items.push(`${p.name} ${p.fromVersion} → ${p.toVersion} (older)`);
        for (const p of diff.added) items.push(`${p.name} ${p.version} (new)`);
        for (const p of diff.removed) items.push(`${p.name} ${p.version} (removed)`);
    }
    $("update-diff").replaceChildren(...items.map(text => element("li", { class: "change" }, text)));
    box.hidden = false;
}

async function check() {
    const result = await run("Upgrade", { preview: true }, "Checking for updates");
    if (result && !result.update)
        notice("No update available.");
}

/* Update, then restart through Cockpit's restart dialog, where the
 * administrator picks when and tells the logged-in users. */
async function updateAndRestart() {
    const result = await run("Upgrade", {}, "Updating");
    if (result && result.changed) {
        $("restart-reason").textContent = "The update is deployed; it is used from the next boot.";
        $("restart-error").hidden = true;
        $("restart-dialog").showModal();
    } else if (result) {
        notice("No update available: nothing to restart for.");
    }
}

async function restart() {
    const when = $("restart-delay").value;
    const message = $("restart-message").value;
    $("restart-confirm").disabled = true;
    try {
        // As Cockpit's dialog: the shell then expects the disconnection.
        cockpit.hint("restart");
        await cockpit.spawn(["shutdown", "--reboot", when, message],
            { superuser: "require", err: "message" });
        $("restart-dialog").close();
        notice(when === "now" ? "Restarting…" : `Restart scheduled (${when} min).`);
    } catch (e) {
        $("restart-error").textContent = String(e.message || e);
        $("restart-error").hidden = false;
    }
    $("restart-confirm").disabled = false;
}

/* ---------- Search ---------- */

async function search(words) {
    clearMessages();
    const list = $("search-results");
    list.replaceChildren();
    document.body.dataset.search = "running";
    try {
        const reply = await call("Search", { words });
        list.replaceChildren(...reply.packages.slice(0, 200).map(p => element("li", {
            class: "result", "data-package": p.name,
        },
        element("strong", {}, p.name),
        ` ${p.version} ${p.architecture} `,
        element("span", { class: "muted" }, p.summary),
        p.installed
            ? element("span", { class: "badge" }, "Installed")
            : element("button", {
                type: "button", class: "link install-result", "data-package": p.name,
                onclick: () => run("Install", { packages: [p.name] }, `Install ${p.name}`),
            }, "Install"))));
        if (reply.packages.length === 0)
            notice("No package matches.");
    } catch (e) {
        showError(e);
    }
    document.body.dataset.search = "done";
}

/* ---------- Wiring ---------- */

function words(text) {
    return text.split(/\s+/).filter(Boolean);
}

function init() {
    $("check-button").addEventListener("click", check);
    $("download-button").addEventListener("click",
        () => run("Upgrade", { downloadOnly: true }, "Downloading the update"));
    $("update-button").addEventListener("click", () => run("Upgrade", {}, "Updating"));
    $("reboot-button").addEventListener("click", updateAndRestart);
    $("restart-confirm").addEventListener("click", restart);
    $("restart-cancel").addEventListener("click", () => $("restart-dialog").close());
    $("rollback-button").addEventListener("click", () => run("Rollback", {}, "Rolling back"));
    $("cleanup-button").addEventListener("click",
        () => run("Cleanup", { base: true, metadata: true }, "Cleaning up"));
    $("cancel-button").addEventListener("click", cancel);
    $("search-form").addEventListener("submit", (event) => {
        event.preventDefault();
        const list = words($("search-input").value);
        if (list.length)
            search(list);
    });
    $("install-form").addEventListener("submit", (event) => {
        event.preventDefault();
        const packages = words($("install-input").value);
        if (packages.length)
            run("Install", { packages }, `Install ${packages.join(" ")}`);
    });
    $("rebase-form").addEventListener("submit", (event) => {
        event.preventDefault();
        const refspec = $("rebase-input").value.trim();
        if (refspec)
            run("Rebase", { refspec }, `Rebase to ${refspec}`);
    });
    refresh();
}

init();
