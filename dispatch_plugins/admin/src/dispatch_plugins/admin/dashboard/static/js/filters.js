// Filter bars whose values live in the URL hash query (#/jobs?state=failed&queue=emails).

import { h } from './dom.js';
import { href, navigate } from './router.js';

/**
 * fields: [{name, label, options?: [[value, label], ...], placeholder?}]; a field with
 * options is a <select> (applied on change), otherwise a text input (applied on Enter).
 */
export function filterBar(path, query, fields, { keep = {} } = {}) {
  const inputs = {};
  const apply = () => {
    const values = { ...keep };
    for (const [name, input] of Object.entries(inputs)) values[name] = input.value.trim();
    navigate(path, values);
  };
  const controls = fields.map((field) => {
    const id = `filter-${field.name}`;
    let input;
    if (field.options) {
      input = h('select', { id, name: field.name, onchange: apply },
        h('option', { value: '' }, field.any || 'Any'),
        field.options.map(([value, label]) => h('option', { value }, label ?? value)));
      input.value = query.get(field.name) || '';
      // A value not in the list (typed into the URL) still shows, rather than silently "Any".
      if (input.value !== (query.get(field.name) || '')) {
        input.append(h('option', { value: query.get(field.name) }, query.get(field.name)));
        input.value = query.get(field.name);
      }
    } else {
      input = h('input', {
        id, name: field.name, type: 'search', value: query.get(field.name) || '',
        placeholder: field.placeholder || '', spellcheck: 'false', autocomplete: 'off',
      });
    }
    inputs[field.name] = input;
    return h('div', { class: 'field' }, h('label', { for: id }, field.label), input);
  });
  const active = fields.some((f) => query.get(f.name));
  return h('form', {
    class: 'filters',
    role: 'search',
    onsubmit: (event) => {
      event.preventDefault();
      apply();
    },
  },
  controls,
  h('div', { class: 'field field-actions' },
    // Selects apply on change; text fields need Enter or this button.
    fields.some((f) => !f.options) && h('button', { type: 'submit', class: 'btn' }, 'Apply'),
    active && h('a', { class: 'btn btn-ghost', href: href(path, keep) }, 'Clear')));
}

/** The query's values for `names`, as an object for api() (empty ones are dropped there). */
export function pick(query, names) {
  const out = {};
  for (const name of names) out[name] = query.get(name) || '';
  return out;
}
