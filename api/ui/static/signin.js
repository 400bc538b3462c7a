// Sign-in: keep a bearer token (checked against the API first), or mint a dev reviewer token outside prod.
import { api, clearToken, problemText, saveToken, showWho, token } from "./common.js";

const params = new URLSearchParams(location.search);
const status = document.getElementById("signin-status");
const errorBox = document.getElementById("page-error");

function fail(message) {
  errorBox.textContent = message;
  errorBox.hidden = false;
  status.textContent = "";
}

function nextPage() {
  const next = params.get("next") || "/ui";
  return next.startsWith("/ui") ? next : "/ui";  // never off this site
}

async function signIn(value, remember) {
  saveToken(value, remember);
  status.textContent = "Checking the token…";
  try {
    await api("/v1/exams?page_size=1&fields=id", { signInOn401: false });
  } catch (err) {
    clearToken();
    fail(`That token does not work: ${problemText(err)}`);
    return;
  }
  location.assign(nextPage());
}

showWho();
if (params.get("reason")) fail(params.get("reason"));
if (token() && !params.get("reason")) status.textContent = "You are signed in; signing in again replaces the token.";

document.getElementById("signin-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const value = document.getElementById("token").value.trim().replace(/^Bearer\s+/i, "");
  if (!value) { fail("Bearer token: paste a token first."); document.getElementById("token").focus(); return; }
  signIn(value, document.getElementById("remember").checked);
});

const devUrl = document.getElementById("main").dataset.devTokenUrl;
const devForm = document.getElementById("dev-form");
if (devUrl && devForm) {
  devForm.addEventListener("submit", async (e) => {
    e.preventDefault();
    const tenant = document.getElementById("dev-tenant").value.trim();
    status.textContent = "Minting a dev reviewer token…";
    try {
      const { data } = await api(devUrl, { method: "POST", body: { tenant } });
      await signIn(data.token, document.getElementById("remember").checked);
    } catch (err) {
      fail(`Could not mint a dev token: ${problemText(err)}`);
      document.getElementById("dev-tenant").focus();
    }
  });
}
