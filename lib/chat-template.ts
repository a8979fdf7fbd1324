/**
 * A model folder's chat template (Jinja), rendered as transformers' apply_chat_template renders it, with
 * `@huggingface/jinja` (the Jinja engine of transformers.js): for the Generator's conversations and for rerankers on
 * decoder LLMs, whose template puts a (query, document) pair into one prompt.
 */
import { Interpreter, Template } from '@huggingface/jinja';
import { ColtrastError } from './errors';
import { readSpecialToken } from './model-dir';

const SPECIAL_TOKENS = ['bos_token', 'eos_token', 'pad_token', 'unk_token'] as const;

// @huggingface/jinja (0.5.13) returns a bare JS undefined for `first` or `last` of an empty list, on which the next
// filter or the output then fails ("Cannot read properties of undefined"); Jinja gives an undefined value, which
// `| default(...)` replaces. Rerankers' templates rely on that (`messages | selectattr('role', 'eq', 'system') | map(...)
// | first | default('<instruction>')`), so a filter's missing result becomes the engine's own undefined value.
type ApplyFilter = (this: Interpreter, operand: unknown, filter: unknown, environment: { lookupVariable(name: string): unknown }) => unknown;
const prototype = Interpreter.prototype as unknown as { applyFilter: ApplyFilter; coltrastPatched?: boolean };
if (!prototype.coltrastPatched) {
  const applyFilter = prototype.applyFilter;
  prototype.applyFilter = function (operand, filter, environment) {
    return applyFilter.call(this, operand, filter, environment) ?? environment.lookupVariable('\u0000undefined');
  };
  prototype.coltrastPatched = true;
}

/** A folder's chat template, compiled once; render() gives it the folder's special tokens (bos_token, ...) too. */
export class ChatTemplate {
  private compiled: Template | undefined;
  private special: Record<string, string> | undefined;

  constructor(
    /** The folder the template and its special tokens come from (named in errors). */
    readonly dir: string,
    readonly source: string,
  ) {}

  /** The template rendered with the special tokens, then `variables`; a template that refuses them throws INVALID_ARGUMENT. */
  render(variables: Record<string, unknown>): string {
    try {
      this.compiled ??= new Template(this.source);
    } catch (error) {
      throw new ColtrastError('MODEL_FILES', `${this.dir}: the chat template does not parse (${(error as Error).message})`, { cause: error });
    }
    this.special ??= Object.fromEntries(SPECIAL_TOKENS.map((key) => [key, readSpecialToken(this.dir, key) ?? '']));
    try {
      return this.compiled.render({ ...this.special, ...variables });
    } catch (error) {
      // The template's raise_exception(...) (a conversation it does not take, e.g. roles out of order) lands here too.
      throw new ColtrastError('INVALID_ARGUMENT', `the chat template refused the messages: ${(error as Error).message}`, { cause: error });
    }
  }
}
