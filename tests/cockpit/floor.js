/* The baseline of the page's load time: the same deployments, from
 * `ostree admin status` spawned through Cockpit's bridge with the same
 * administrative access the page's Varlink channel asks for. */
"use strict";

const sysroot = new URLSearchParams(window.location.search).get("sysroot");
const shown = document.getElementById("deployments");
cockpit.spawn(["ostree", "admin", "status", "--sysroot=" + sysroot],
    { superuser: "try", err: "message" })
    .then(out => {
        shown.textContent = out;
        document.body.dataset.shownMs = String(Math.round(performance.now()));
        document.body.dataset.loaded = "true";
    })
    .catch(e => {
        shown.textContent = String(e.message || e);
        document.body.dataset.loaded = "error";
    });
