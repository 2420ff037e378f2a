// The report's one script, constant (no data is ever written into it; the page's CSP allows it by
// its sha256): click a graph node to highlight its edges, and mark the page so a test can see
// that this script, and only this script, ran.
document.documentElement.setAttribute('data-report-js', 'ok');
document.querySelectorAll('svg.circuit').forEach(function (svg) {
  var info = document.getElementById(svg.getAttribute('data-info'));
  svg.addEventListener('click', function (ev) {
    var node = ev.target.closest ? ev.target.closest('.node') : null;
    svg.querySelectorAll('.hl').forEach(function (el) { el.classList.remove('hl'); });
    if (!node) {
      svg.classList.remove('focus');
      if (info) { info.textContent = 'Click a node to highlight its edges.'; }
      return;
    }
    var k = node.getAttribute('data-k');
    svg.classList.add('focus');
    node.classList.add('hl');
    svg.querySelectorAll('[data-s="' + k + '"],[data-t="' + k + '"]').forEach(function (el) { el.classList.add('hl'); });
    var t = node.querySelector('title');
    if (info) { info.textContent = t ? t.textContent : ''; }
  });
});
