pub(crate) mod voltmart_page;
