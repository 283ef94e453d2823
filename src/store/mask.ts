// A store URL as it may be printed: any password, in the user info or in a
// `password=` parameter, replaced by ***. Also for strings that do not parse,
// so that an error about a bad URL cannot print its secret either.
export function maskUrl(url: string): string {
  return url
    .replace(/^([a-z][a-z0-9+.-]*:\/\/[^/?#@]*?:)[^/?#@]*@/i, '$1***@')
    .replace(/([?&]password=)[^&#]*/gi, '$1***');
}
