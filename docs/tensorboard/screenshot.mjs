// Screenshots of TensorBoard for the README: node screenshot.mjs URL OUT_PREFIX
// Needs Debian's chromium (/usr/bin/chromium) and `npm install playwright-core`.
import { chromium } from "playwright-core";

const [url, prefix] = process.argv.slice(2);
const browser = await chromium.launch({ executablePath: "/usr/bin/chromium", args: ["--no-sandbox"] });
const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });

async function shot(hash, name, waitFor) {
  await page.goto(`${url}/${hash}`, { waitUntil: "networkidle" });
  if (waitFor) await page.waitForSelector(waitFor, { timeout: 30000 }).catch(() => {});
  await page.waitForTimeout(2500);
  const close = page.locator('button[aria-label*="lose"]');  // the settings pane's close button
  if (await close.count()) await close.first().click().catch(() => {});
  await page.waitForTimeout(500);
  await page.screenshot({ path: `${prefix}-${name}.png` });
}

await shot("?tagFilter=eval%2F(mean_return|best)#timeseries", "scalars", "canvas, svg");
await shot("#hparams", "hparams", null);
await shot("?tagFilter=best_policy#timeseries", "gif", "img");
await browser.close();
