//! Categories: create, read, update, list (children or whole subtrees, by slug) and delete.

use backbone_common::{error::FieldViolation, page};

use super::{Catalog, expected_version, page_cursor, page_size};
use crate::{
    db::{
        self,
        categories::{CategoryChanges, CategoryError},
        models::CategoryRow,
    },
    domain::{
        self,
        category::{self as rules, Category, subtree},
        product::collect,
    },
    error::CatalogError,
};

fn map(err: CategoryError) -> CatalogError {
    match err {
        CategoryError::SlugTaken => CatalogError::SlugTaken,
        CategoryError::UnknownParent => {
            CatalogError::field("category.parent_id", "names no category")
        }
        CategoryError::Cycle => CatalogError::CategoryCycle,
        CategoryError::HasProducts => CatalogError::CategoryHasProducts,
        CategoryError::HasChildren => CatalogError::CategoryHasChildren,
        CategoryError::NotFound => CatalogError::NotFound { what: "category" },
        CategoryError::Stale(version) => CatalogError::EtagMismatch {
            current: domain::etag(version),
        },
        CategoryError::Db(err) => err.into(),
    }
}

impl Catalog {
    /// Creates a category.
    pub async fn create_category(
        &self,
        slug: &str,
        name: &str,
        parent_id: &str,
    ) -> Result<Category, CatalogError> {
        let mut violations = Vec::new();
        collect(&mut violations, "category.slug", rules::check_slug(slug));
        let name = collect(&mut violations, "category.name", rules::check_name(name));
        let Some(name) = name.filter(|_| violations.is_empty()) else {
            return Err(CatalogError::InvalidArgument(violations));
        };
        let now = domain::now();
        let row = CategoryRow {
            id: domain::new_id(),
            slug: slug.to_owned(),
            name,
            parent_id: (!parent_id.is_empty()).then(|| parent_id.to_owned()),
            version: 1,
            created_at: now,
            updated_at: now,
        };
        let mut conn = self.conn().await?;
        db::categories::create(&mut conn, &row).await.map_err(map)?;
        Ok(row.into())
    }

    /// One category.
    pub async fn category(&self, id: &str) -> Result<Category, CatalogError> {
        if id.is_empty() {
            return Err(CatalogError::field("category_id", "is required"));
        }
        let mut conn = self.conn().await?;
        db::categories::get(&mut conn, id)
            .await?
            .map(Category::from)
            .ok_or(CatalogError::NotFound { what: "category" })
    }

    /// Applies the fields named in `paths`.
    pub async fn update_category(
        &self,
        id: &str,
        slug: &str,
        name: &str,
        parent_id: &str,
        paths: &[String],
        etag: &str,
    ) -> Result<Category, CatalogError> {
        if id.is_empty() {
            return Err(CatalogError::field("category.id", "is required"));
        }
        if paths.is_empty() {
            return Err(CatalogError::field(
                "update_mask",
                "must name at least one field",
            ));
        }
        let mut violations = Vec::new();
        let mut changes = CategoryChanges::default();
        for path in paths {
            match path.as_str() {
                "slug" => {
                    collect(&mut violations, "category.slug", rules::check_slug(slug));
                    changes.slug = Some(slug.to_owned());
                }
                "name" => {
                    changes.name =
                        collect(&mut violations, "category.name", rules::check_name(name));
                }
                "parent_id" => {
                    if parent_id == id {
                        return Err(CatalogError::CategoryCycle);
                    }
                    changes.parent_id = Some((!parent_id.is_empty()).then(|| parent_id.to_owned()));
                }
                other => violations.push(FieldViolation::new(
                    "update_mask",
                    format!("unknown path {other:?}: use slug, name or parent_id"),
                )),
            }
        }
        if !violations.is_empty() {
            return Err(CatalogError::InvalidArgument(violations));
        }
        let mut conn = self.conn().await?;
        db::categories::update(
            &mut conn,
            id,
            &changes,
            expected_version(etag),
            domain::now(),
        )
        .await
        .map(Category::from)
        .map_err(map)
    }

    /// Children (or all descendants) of `parent_id` (roots when empty), by slug, paged.
    pub async fn list_categories(
        &self,
        parent_id: &str,
        include_descendants: bool,
        size: i32,
        token: &str,
    ) -> Result<(Vec<Category>, String), CatalogError> {
        let size = page_size(size)?;
        let query = format!("categories|parent={parent_id}|all={include_descendants}");
        let after = page_cursor(&query, token)?;
        let mut conn = self.conn().await?;
        let all = db::categories::all(&mut conn).await?;
        if !parent_id.is_empty() && !all.iter().any(|c| c.id == parent_id) {
            return Err(CatalogError::NotFound { what: "category" });
        }
        let tree: Vec<(String, Option<String>)> = all
            .iter()
            .map(|c| (c.id.clone(), c.parent_id.clone()))
            .collect();
        let wanted: Vec<&CategoryRow> = if include_descendants {
            if parent_id.is_empty() {
                all.iter().collect()
            } else {
                let ids = subtree(parent_id, &tree);
                all.iter()
                    .filter(|c| c.id != parent_id && ids.contains(&c.id))
                    .collect()
            }
        } else {
            let parent = (!parent_id.is_empty()).then_some(parent_id);
            all.iter()
                .filter(|c| c.parent_id.as_deref() == parent)
                .collect()
        };
        // Sorted by slug (unique), so the slug is the cursor.
        let mut page: Vec<Category> = wanted
            .into_iter()
            .filter(|c| after.as_deref().is_none_or(|a| c.slug.as_str() > a))
            .take(usize::try_from(size + 1).unwrap_or(usize::MAX))
            .cloned()
            .map(Category::from)
            .collect();
        let next = if page.len() as i64 > size {
            page.truncate(usize::try_from(size).unwrap_or(usize::MAX));
            page.last()
                .map(|c| page::encode(&query, &c.slug))
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok((page, next))
    }

    /// Deletes an unused category.
    pub async fn delete_category(&self, id: &str, etag: &str) -> Result<(), CatalogError> {
        if id.is_empty() {
            return Err(CatalogError::field("category_id", "is required"));
        }
        let mut conn = self.conn().await?;
        db::categories::delete(&mut conn, id, expected_version(etag))
            .await
            .map_err(map)
    }
}
