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
    // draw every chart as SVG, whatever renderer it asks for, so that its marks can be counted
    await page.addInitScript(() => {
      let embed;
      Object.defineProperty(window, 'vegaEmbed', { configurable: true,
        get: () => embed,
        set: v => { embed = Object.assign((el, spec, opt) => v(el, spec, { ...(opt || {}), renderer: 'svg' }), v); } });
    });
    page.on('pageerror', e => seen.errors.push(String(e.message || e)));
    await page.goto(pathToFileURL(p.html).href, { waitUntil: 'load' });
    const charts = '[id^="altair-viz-"], .vega-embed';
    await page.waitForFunction(sel => [...document.querySelectorAll(sel)].every(el => el.querySelector('svg, canvas')
                                                                               || el.querySelector('.error')),
                               charts, { timeout: job.timeout_ms }).catch(() => {});
    // MathJax typesets after load; its promise settles when every formula is drawn
    await page.waitForFunction(() => !window.MathJax || window.MathJax.startup?.promise, null, { timeout: job.timeout_ms })
      .then(() => page.evaluate(() => window.MathJax?.startup?.promise)).catch(e => seen.errors.push('MathJax: ' + e));
    Object.assign(seen, await page.evaluate(sel => {
      const cell = el => (el.closest('[id^="cell-"]')?.id || '').slice('cell-'.length);
      const uniq = [...new Set(document.querySelectorAll(sel))];
      // the text a reader reads: not code, not scripts, not typeset maths
      const prose = [];
      const walk = node => {
        if (node.nodeType === Node.TEXT_NODE) { if (node.textContent.trim()) prose.push({ text: node.textContent, el: node.parentElement }); return; }
        if (node.nodeType !== Node.ELEMENT_NODE || node.matches('pre, code, script, style, mjx-container, svg, .vega-embed')) return;
        if (getComputedStyle(node).fontFamily.includes('monospace')) return;  // quoted text shown as typed (an output's data)
        node.childNodes.forEach(walk);
      };
      walk(document.body);
      const rawMath = /\$[^\s$][^$]*\$|\\\(|\\\[/, attrs = /\{(?:target|style|width|height|\.[a-z][\w-]*|#[a-z][\w-]*)[^}]*\}|^\s*:::/;
      const leftovers = re => prose.filter(p => re.test(p.text)).map(p => ({ cell: cell(p.el), text: p.text.trim().slice(0, 80) }));
      // marks a reader can see: data marks (not axes or legends) with an area on the page; a bar on a log scale
      // that starts at 0 is drawn with no height, so it counts for nothing
      const marks = el => [...el.querySelectorAll('.role-mark > path, .role-mark > line, .role-mark > rect, .role-mark > text, '
                                                  + '.role-mark > image, .role-mark > circle, .role-mark > g > path')]
        .filter(m => { const b = m.getBoundingClientRect(); return b.width * b.height > 0 || (m.tagName === 'line' && b.width + b.height > 0); }).length;
      return {
        width: { page: document.documentElement.scrollWidth, viewport: window.innerWidth },
        rawMath: leftovers(rawMath), quartoText: leftovers(attrs), rawMarkdown: leftovers(/`[^`\s][^`]*`/),
        cutOutputs: [...document.querySelectorAll('.cell-output pre')].filter(pre => pre.scrollWidth > pre.clientWidth + 1)
          .map(pre => ({ cell: cell(pre), over: pre.scrollWidth - pre.clientWidth,
                         line: [...pre.textContent.split('\n')].sort((a, b) => b.length - a.length)[0].slice(0, 60) })),
        title: document.title.trim(),
        headings: [...document.querySelectorAll('h1, h2, h3, h4, h5, h6')].map(h =>
          ({ tag: h.tagName.toLowerCase(), text: h.textContent.replace(/¶$/, '').trim(), cell: cell(h) })),
        charts: uniq.map(el => ({ cell: cell(el), drawn: !!el.querySelector('svg, canvas'), marks: marks(el),
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
