"""The customers screens: the list with each customer's counts, one customer (details,
stores, terminals by status, open alerts, uptime), one store (its terminals, their open
alerts, its uptime), and adding and editing customers and their stores (operators and
admins). Queries and changes are console.customer_repository's.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from console import customer_repository as repository
from console import store_repository
from console.access import acting_user, client_address, requires_role
from console.customer_forms import CONTRACT_TYPES, CustomerForm, StoreForm, zone_names
from console.db import request_session
from rollouts.errors import WindowError
from rollouts.windows import parse_window
from shared.models import Customer, Role, Store

bp = Blueprint("customers", __name__)

# Ids in paths are PostgreSQL integers: a larger number is simply not there (not a 500).
ID = "int(max=2147483647)"


def _actor() -> str:
    user = acting_user()
    assert user is not None  # requires_role let the request through
    return user.username


def _customer_or_404(customer_id: int) -> Customer:
    customer = repository.get_customer(request_session(), customer_id)
    if customer is None:
        abort(404, description=f"There is no customer with id {customer_id}.")
    return customer


def _store_or_404(customer: Customer, store_id: int) -> Store:
    assert customer.id is not None
    store = repository.get_store(request_session(), customer.id, store_id)
    if store is None:
        abort(404, description=f"Customer {customer.name} has no store with id {store_id}.")
    return store


@bp.get("/customers")
@requires_role(Role.VIEWER)
def index() -> str:
    search = request.args.get("q", "").strip()[: repository.SEARCH_MAX]
    customers = repository.list_customers(request_session(), search or None)
    return render_template(
        "customers.html", customers=customers, search=search, limit=repository.LIST_LIMIT
    )


def _customer_form_page(
    form: CustomerForm, customer: Customer | None = None, status: int = 200
) -> tuple[str, int]:
    page = render_template(
        "customer_form.html",
        form=form,
        customer=customer,
        contract_types=CONTRACT_TYPES,
        zones=zone_names(),
    )
    return page, status


@bp.get("/customers/new")
@requires_role(Role.OPERATOR)
def new() -> tuple[str, int]:
    return _customer_form_page(CustomerForm())


@bp.post("/customers")
@requires_role(Role.OPERATOR)
def create() -> Response | tuple[str, int]:
    form = CustomerForm.parse(request.form.to_dict())
    if form.errors:
        return _customer_form_page(form, status=400)
    db = request_session()
    try:
        customer = repository.create_customer(db, _actor(), form, client_address())
    except repository.NameTaken as exc:
        db.rollback()
        form.errors[exc.field] = exc.sentence()
        return _customer_form_page(form, status=400)
    flash(f"Customer {customer.name} added.", "info")
    return redirect(url_for("customers.detail", customer_id=customer.id))


def ends_next_day(window: str | None) -> bool:
    """Whether the install window ``window`` (as typed) crosses midnight, so that it ends
    on the day after it opens. A window that does not parse says nothing: the form shows
    why beside the field instead."""
    try:
        parsed = parse_window(window or "")
    except WindowError:
        return False
    return parsed is not None and parsed.crosses_midnight


def _detail_page(
    customer: Customer, store_form: StoreForm | None = None, status: int = 200
) -> tuple[str, int]:
    db = request_session()
    assert customer.id is not None
    windows = store_repository.install_windows(db, customer.id)
    page = render_template(
        "customer.html",
        customer=customer,
        summary=repository.summary(db, customer.id),
        stores=repository.stores_of(db, customer.id),
        windows=windows,
        next_day={store_id for store_id, window in windows.items() if ends_next_day(window)},
        statuses=repository.status_counts(db, customer.id),
        alerts=repository.open_alerts(db, customer.id),
        alerts_shown=repository.OPEN_ALERTS_SHOWN,
        uptime=repository.uptime(db, customer),
        store_form=store_form or StoreForm(timezone=customer.timezone),
        zones=zone_names(),
    )
    return page, status


@bp.get(f"/customers/<{ID}:customer_id>")
@requires_role(Role.VIEWER)
def detail(customer_id: int) -> tuple[str, int]:
    return _detail_page(_customer_or_404(customer_id))


@bp.route(f"/customers/<{ID}:customer_id>/edit", methods=["GET", "POST"])
@requires_role(Role.OPERATOR)
def edit(customer_id: int) -> Response | tuple[str, int]:
    customer = _customer_or_404(customer_id)
    if request.method == "GET":
        return _customer_form_page(CustomerForm.of(customer), customer)
    form = CustomerForm.parse(request.form.to_dict())
    if form.errors:
        return _customer_form_page(form, customer, 400)
    db = request_session()
    try:
        changes = repository.update_customer(db, _actor(), customer, form, client_address())
    except repository.NameTaken as exc:
        db.rollback()
        form.errors[exc.field] = exc.sentence()
        return _customer_form_page(form, customer, 400)
    flash(_saved(f"Customer {customer.name}", changes), "info")
    return redirect(url_for("customers.detail", customer_id=customer_id))


def _saved(what: str, changes: dict[str, Any]) -> str:
    if not changes:
        return f"{what}: nothing changed."
    return f"{what} saved ({', '.join(name.replace('_', ' ') for name in changes)} changed)."


@bp.post(f"/customers/<{ID}:customer_id>/stores")
@requires_role(Role.OPERATOR)
def add_store(customer_id: int) -> Response | tuple[str, int]:
    customer = _customer_or_404(customer_id)
    form = StoreForm.parse(request.form.to_dict())
    if form.errors:
        return _detail_page(customer, form, 400)
    db = request_session()
    try:
        store = repository.create_store(db, _actor(), customer, form, client_address())
    except repository.NameTaken as exc:
        db.rollback()
        form.errors[exc.field] = exc.sentence()
        return _detail_page(customer, form, 400)
    flash(f"Store {store.code} added.", "info")
    return redirect(url_for("customers.detail", customer_id=customer_id, _anchor="stores"))


@bp.get(f"/customers/<{ID}:customer_id>/stores/<{ID}:store_id>")
@requires_role(Role.VIEWER)
def store(customer_id: int, store_id: int) -> str:
    customer = _customer_or_404(customer_id)
    found = _store_or_404(customer, store_id)
    assert found.id is not None
    db = request_session()
    return render_template(
        "store.html",
        customer=customer,
        store=found,
        counts=store_repository.counts(db, found.id),
        terminals=store_repository.terminals(db, found.id),
        terminals_shown=store_repository.TERMINALS_SHOWN,
        alerts=store_repository.open_alerts(db, found.id),
        alerts_shown=store_repository.OPEN_ALERTS_SHOWN,
        uptime=store_repository.uptime(db, found),
        window_ends_next_day=ends_next_day(found.maintenance_window),
    )


def _store_form_page(
    customer: Customer, store: Store, form: StoreForm, status: int = 200
) -> tuple[str, int]:
    page = render_template(
        "store_form.html",
        customer=customer,
        store=store,
        form=form,
        zones=zone_names(),
        window_ends_next_day=not form.errors.get("maintenance_window")
        and ends_next_day(form.maintenance_window),
    )
    return page, status


@bp.route(f"/customers/<{ID}:customer_id>/stores/<{ID}:store_id>/edit", methods=["GET", "POST"])
@requires_role(Role.OPERATOR)
def edit_store(customer_id: int, store_id: int) -> Response | tuple[str, int]:
    customer = _customer_or_404(customer_id)
    store = _store_or_404(customer, store_id)
    if request.method == "GET":
        return _store_form_page(customer, store, StoreForm.of(store))
    form = StoreForm.parse(request.form.to_dict())
    if form.errors:
        return _store_form_page(customer, store, form, 400)
    db = request_session()
    try:
        changes = repository.update_store(db, _actor(), customer, store, form, client_address())
    except repository.NameTaken as exc:
        db.rollback()
        form.errors[exc.field] = exc.sentence()
        return _store_form_page(customer, store, form, 400)
    flash(_saved(f"Store {store.code}", changes), "info")
    return redirect(url_for("customers.detail", customer_id=customer_id, _anchor="stores"))
