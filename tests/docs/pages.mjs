// Opens rendered book pages in headless Chromium and reports what a reader would see: title, headings, whether
// each chart drew, images that fail, script errors. The pages ask cdn.jsdelivr.net for vega; those requests are
// answered from this folder's node_modules and every request to another host is refused, so the result
// does not depend on the network.
//   node pages.mjs job.json result.json     (job: {chromium, timeout_ms, pages: [{name, html, screenshot}]})
import { chromium } from 'playwright-core';
import { readFileSync, writeFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const [jobFile, resultFile] = process.argv.slice(2);
const job = JSON.parse(readFileSync(jobFile, 'utf8'));
const modules = fileURLToPath(new URL('node_modules', import.meta.url));

// A jsdelivr range is a version prefix ("6", "6.4.1") or a caret range ("^5.2")
function satisfies(version, range) {
  if (!range || range === 'latest') return true;
  const want = range.replace(/^[\^~]/, '');
  if (range.startsWith('^')) return version.split('.')[0] === want.split('.')[0];
  return version === want || version.startsWith(want + '.');
}

// cdn.jsdelivr.net/npm/NAME@RANGE[/FILE] -> {body} from node_modules, or {error} saying why not
function fromNodeModules(url) {
  const m = new URL(url).pathname.match(/^\/npm\/((?:@[^/@]+\/)?[^/@]+)(?:@([^/]+))?(\/.*)?$/);
  if (!m) return { error: `no local copy for ${url}` };
  const [, name, range, file] = m;
  const dir = join(modules, name);
  if (!existsSync(join(dir, 'package.json'))) return { error: `the page loads ${name} from a CDN; add it to tests/docs/package.json` };
  const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8'));
  if (!satisfies(pkg.version, range)) return { error: `the page asks for ${name}@${range}; tests/docs/package.json pins ${pkg.version}` };
  return { body: readFileSync(join(dir, file ? file.slice(1) : (pkg.jsdelivr || pkg.unpkg || pkg.browser || pkg.main))) };
}

const browser = await chromium.launch({
  executablePath: job.chromium,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
         '--disable-component-update', '--disable-sync'],
});
const results = {};
try {
  for (const p of job.pages) {
    // a fresh context per page: no state or cached script carries from one page to the next
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    const seen = { errors: [], cdn: [], blocked: [] };
    await context.route(/^https?:/, route => {
      const url = route.request().url();
      if (new URL(url).hostname === 'cdn.jsdelivr.net') {
        const local = fromNodeModules(url);
        if (local.body) return route.fulfill({ status: 200, contentType: 'application/javascript', body: local.body });
        seen.cdn.push(local.error);
      } else seen.blocked.push(url);
      return route.abort();
    });
    const page = await context.newPage();
    page.on('pageerror', e => seen.errors.push(String(e.message || e)));
    await page.goto(pathToFileURL(p.html).href, { waitUntil: 'load' });
    const charts = '[id^="altair-viz-"], .vega-embed';
    await page.waitForFunction(sel => [...document.querySelectorAll(sel)].every(el => el.querySelector('svg, canvas')
                                                                               || el.querySelector('.error')),
                               charts, { timeout: job.timeout_ms }).catch(() => {});
    Object.assign(seen, await page.evaluate(sel => {
      const cell = el => (el.closest('[id^="cell-id="]')?.id || '').slice('cell-id='.length);
      const uniq = [...new Set(document.querySelectorAll(sel))];
      return {
        title: document.title.trim(),
        headings: [...document.querySelectorAll('h1, h2, h3, h4, h5, h6')].map(h =>
          ({ tag: h.tagName.toLowerCase(), text: h.textContent.replace(/¶$/, '').trim(), cell: cell(h) })),
        charts: uniq.map(el => ({ cell: cell(el), drawn: !!el.querySelector('svg, canvas'),
                                  error: el.querySelector('.error')?.textContent.slice(0, 200) || '' })),
        images: [...document.images].map(im => ({ cell: cell(im), src: im.src.slice(0, 80),
                                                  ok: im.complete && im.naturalWidth > 0 })),
      };
    }, charts));
    await page.screenshot({ path: p.screenshot, fullPage: true });
    results[p.name] = seen;
    await context.close();
  }
} finally {
  await browser.close();
}
writeFileSync(resultFile, JSON.stringify(results, null, 1));
