// Drives kith's web admin in headless Chromium (Debian's /usr/bin/chromium through
// playwright-core), the way an admin on a phone would: sign in, add a user, make them an
// admin, look at every page, send an announcement, invite someone who then registers through
// the invite page, delete both users, sign out. Saves a
// screenshot of each page into SHOTS. Exits non-zero with the reason on the first surprise.
//
// usage: node webadmin.mjs BASE_URL ADMIN_JID ADMIN_PASSWORD DOMAIN SHOTS_DIR
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";

const [base, adminJid, adminPassword, domain, shots] = process.argv.slice(2);
mkdirSync(shots, { recursive: true });

const browser = await chromium.launch({
  executablePath: process.env.KITH_CHROMIUM || "/usr/bin/chromium",
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
});
let failed = false;
try {
  const context = await browser.newContext({
    ignoreHTTPSErrors: true,
    viewport: { width: 390, height: 844 }, // a phone
  });
  const page = await context.newPage();
  const shot = (name) => page.screenshot({ path: `${shots}/${name}.png`, fullPage: true });
  const expectText = async (text) => {
    const body = await page.textContent("body");
    if (!body.includes(text)) {
      throw new Error(`expected "${text}" on ${page.url()}, page says: ${body.slice(0, 600)}`);
    }
  };
  const signIn = async (jid, password) => {
    await page.fill("#jid", jid);
    await page.fill("#password", password);
    await Promise.all([page.waitForNavigation(), page.click("button")]);
  };

  await page.goto(`${base}/admin`);
  if (!page.url().endsWith("/admin/login")) throw new Error(`not sent to sign in: ${page.url()}`);
  await shot("01-login");

  await signIn(adminJid, "not-the-password");
  await expectText("Wrong address or password.");

  await signIn(adminJid, adminPassword);
  if (!page.url().endsWith("/admin/users")) throw new Error(`after sign-in at ${page.url()}`);
  await expectText(adminJid);
  await shot("02-users");

  const carol = `carol@${domain}`;
  await page.fill("#new-jid", "carol");
  await page.fill("#new-password", "carol-secret-1");
  await Promise.all([page.waitForNavigation(), page.click("text=Add user")]);
  await expectText(`Account ${carol} created.`);
  const row = page.locator("tr", { hasText: carol });
  await row.locator("summary").click();
  await Promise.all([page.waitForNavigation(), row.locator("text=Make admin").click()]);
  await expectText(`${carol} is now an admin.`);
  await shot("03-user-added");

  for (const [path, text] of [
    ["sessions", "Online now"],
    ["uploads", "Share of quota"],
    ["certs", "Certificate"],
    ["check", "kith check"],
    ["announce", "A message to everyone online now"],
  ]) {
    await page.goto(`${base}/admin/${path}`, { timeout: 60000 });
    await expectText(text);
    await shot(`04-${path}`);
  }
  await page.fill("#text", "The server restarts tonight at 23:00.");
  await Promise.all([page.waitForNavigation(), page.click("text=Send")]);
  await expectText("Sent to 1 online session.");

  // An invite, used as the invited person would: open the link, pick a name, register.
  await page.goto(`${base}/admin/invites`);
  await page.fill("#circle", "family");
  await Promise.all([page.waitForNavigation(), page.click("text=Create invite")]);
  const link = await page.getAttribute("#invite-link", "href");
  if (!link || !link.startsWith(`${base}/invite/`)) throw new Error(`invite link ${link}`);
  if ((await page.locator("svg").count()) === 0) throw new Error("no QR code on the invite");
  await shot("06-invite");
  const guest = await context.newPage();
  await guest.goto(link);
  await guest.fill("#username", "dave");
  await guest.fill("#password", "dave-secret-1");
  await Promise.all([guest.waitForNavigation(), guest.click("button[type=submit]")]);
  const welcome = await guest.textContent("body");
  if (!welcome.includes(`dave@${domain}`)) throw new Error(`after registering: ${welcome.slice(0, 400)}`);
  await guest.screenshot({ path: `${shots}/07-registered.png`, fullPage: true });
  await guest.close();
  await page.goto(`${base}/admin/invites`);
  await expectText("Open invites (0)");
  // A second invite, revoked: it leaves the list.
  await Promise.all([page.waitForNavigation(), page.click("text=Create invite")]);
  await page.goto(`${base}/admin/invites`);
  await expectText("Open invites (1)");
  await Promise.all([page.waitForNavigation(), page.click("text=Revoke")]);
  await expectText("Invite revoked");
  await expectText("Open invites (0)");
  await page.goto(`${base}/admin/users`);
  await expectText(`dave@${domain}`);

  // Delete carol (made here) and dave (who came through the invite).
  for (const who of [carol, `dave@${domain}`]) {
    await page.goto(`${base}/admin/users`);
    const row = page.locator("tr", { hasText: who });
    await row.locator("summary").click();
    await row.locator("input[name=confirm]").fill(who);
    await Promise.all([page.waitForNavigation(), row.locator("text=Delete").click()]);
    await expectText(`Account ${who} deleted.`);
    if ((await page.locator("tr", { hasText: who }).count()) !== 0) {
      throw new Error(`the deleted user ${who} is still listed`);
    }
  }
  await shot("05-user-deleted");

  await Promise.all([page.waitForNavigation(), page.click("text=Sign out")]);
  if (!page.url().endsWith("/admin/login")) throw new Error(`after sign-out at ${page.url()}`);
  await page.goto(`${base}/admin/users`);
  if (!page.url().endsWith("/admin/login")) throw new Error("the session outlived sign-out");
  console.log("ok");
} catch (e) {
  console.error(`web admin in chromium: ${e.message}`);
  failed = true;
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
