"""The cashier page at the simulator's root: pending orders of both API versions with Pay /
Fail, the delivery log, and login-code minting. Plain HTML and a little JS over the control API.

Paths in the script are relative to the page, so it works mounted at ``/sim/`` as well.
"""

from __future__ import annotations

from html import escape

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from app.simulator.deps import SimulatorDep

router = APIRouter(include_in_schema=False)

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Local WeChat cashier</title>
<style>
 body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}
 h1{font-size:1.3em} h2{font-size:1.1em;margin-top:1.5em}
 table{border-collapse:collapse;width:100%}
 td,th{border:1px solid #ccc;padding:3px 6px;text-align:left}
 th{background:#f3f3f3} .ok{color:#080} .bad{color:#b00} code{font-size:12px}
 button{margin-right:4px} .muted{color:#777}
</style></head><body>
<h1>Local WeChat <span class="muted">appid __APPID__ · mch_id __MCH_ID__</span></h1>
<section><h2>wx.login</h2>
 <input id="openid" placeholder="openid (optional)" size="32">
 <button id="mint">Mint login code</button>
 <span id="minted"></span></section>
<section><h2>Pending payments</h2>
 <table><thead><tr><th>out_trade_no</th><th>api</th><th>body</th><th>amount</th><th>openid</th>
 <th>state</th><th></th></tr></thead><tbody id="pending"></tbody></table>
 <p id="no-pending" class="muted">No order is waiting for payment.</p></section>
<section><h2>All orders</h2>
 <table><thead><tr><th>out_trade_no</th><th>api</th><th>state</th><th>amount</th><th>refunded</th>
 <th>transaction_id</th></tr></thead><tbody id="orders"></tbody></table></section>
<section><h2>Notify deliveries</h2>
 <table><thead><tr><th>#</th><th>api</th><th>kind</th><th>out_trade_no</th><th>attempt</th>
 <th>copy</th>
 <th>url</th><th>status</th><th>verdict</th><th>reply</th><th>faults</th></tr></thead>
 <tbody id="deliveries"></tbody></table></section>
<script>
const base = location.pathname.endsWith("/") ? location.pathname : location.pathname + "/";
const api = (path) => base + "_control/" + path;
const PAYABLE = ["NOTPAY", "PAYERROR"];
function cell(row, text, cls) {
  const td = row.insertCell(); td.textContent = text == null ? "" : String(text);
  if (cls) td.className = cls; return td;
}
function yuan(fen) { return (fen / 100).toFixed(2); }
async function call(method, path, body) {
  const init = {method, headers: {"Content-Type": "application/json"}};
  if (body !== undefined) init.body = JSON.stringify(body);
  const response = await fetch(api(path), init);
  return response.json();
}
function button(label, id, onclick) {
  const b = document.createElement("button");
  b.textContent = label; b.id = id; b.onclick = onclick; return b;
}
async function pay(prepayId, result) {
  await call("POST", "pay", {prepay_id: prepayId, result});
  await refresh();
}
function renderPending(orders) {
  const body = document.getElementById("pending"); body.replaceChildren();
  const pending = orders.filter((o) => PAYABLE.includes(o.trade_state) && !o.prepay_expired);
  for (const o of pending) {
    const row = body.insertRow(); row.dataset.outTradeNo = o.out_trade_no;
    cell(row, o.out_trade_no); cell(row, o.api_version, "api"); cell(row, o.body);
    cell(row, "¥" + yuan(o.total_fee));
    cell(row, o.openid); cell(row, o.trade_state);
    const actions = row.insertCell();
    actions.append(button("Pay", "pay-" + o.out_trade_no, () => pay(o.prepay_id, "SUCCESS")));
    actions.append(button("Fail", "fail-" + o.out_trade_no, () => pay(o.prepay_id, "FAIL")));
  }
  document.getElementById("no-pending").hidden = pending.length > 0;
}
function renderOrders(orders) {
  const body = document.getElementById("orders"); body.replaceChildren();
  for (const o of orders) {
    const row = body.insertRow(); row.id = "order-" + o.out_trade_no;
    cell(row, o.out_trade_no); cell(row, o.api_version, "api");
    cell(row, o.trade_state, "state");
    cell(row, "¥" + yuan(o.total_fee)); cell(row, "¥" + yuan(o.refunded_fee));
    cell(row, o.transaction_id);
  }
}
function renderDeliveries(attempts) {
  const body = document.getElementById("deliveries"); body.replaceChildren();
  for (const a of attempts.slice().reverse()) {
    const row = body.insertRow(); row.id = "delivery-" + a.id;
    cell(row, a.id); cell(row, a.api_version, "api"); cell(row, a.kind);
    cell(row, a.out_trade_no); cell(row, a.attempt);
    cell(row, a.copy); cell(row, a.url); cell(row, a.status);
    cell(row, a.verdict, a.verdict === "acknowledged" ? "ok verdict" : "bad verdict");
    cell(row, a.reply).className = "reply"; cell(row, a.faults.join(", "));
  }
}
let shown = "";
async function refresh() {
  const [orders, attempts] = await Promise.all([call("GET", "orders"), call("GET", "notifies")]);
  // Re-render only on change, so buttons do not move under the pointer.
  const snapshot = JSON.stringify([orders, attempts]);
  if (snapshot === shown) return;
  shown = snapshot;
  renderPending(orders); renderOrders(orders); renderDeliveries(attempts);
}
document.getElementById("mint").onclick = async () => {
  const openid = document.getElementById("openid").value.trim() || null;
  const minted = await call("POST", "login-code", {openid});
  document.getElementById("minted").innerHTML =
    "code <code id='minted-code'></code> for openid <code id='minted-openid'></code>";
  document.getElementById("minted-code").textContent = minted.code;
  document.getElementById("minted-openid").textContent = minted.openid;
};
refresh(); setInterval(refresh, 1000);
</script></body></html>
"""


@router.get("/", response_class=HTMLResponse)
async def cashier_page(simulator: SimulatorDep) -> HTMLResponse:
    config = simulator.config
    page = _PAGE.replace("__APPID__", escape(config.appid)).replace(
        "__MCH_ID__", escape(config.mch_id)
    )
    return HTMLResponse(page)
